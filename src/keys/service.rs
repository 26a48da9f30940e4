//! The key service: lifecycle and cryptographic operations over the keystores and the
//! metadata store.
//!
//! Keys are held in memory (loaded at start-up) and written through to the store. Changes to
//! one key are serialised by its gate and become visible to readers only once durable, so no
//! caller ever sees a state that a crash could take back.

use super::model::DEFAULT_PENDING_DAYS;
use super::reference::{arn_prefix, printable};
use super::{
    KeyError, KeyRecord, KeyReference, KeyState, KeyUse, KeyVersion, RotationSchedule, RotationType,
};
use crate::clock::{Clock, DAY, UnixSeconds};
use crate::crypto::{CiphertextBlob, EncryptionContext, NONCE_LEN};
use crate::keystore::{KeyStore, KeyStoreError, MaterialRef};
use crate::policy::{NamedPolicy, Policy, PolicyKind, default_key_policy};
use crate::secret::SecretBytes;
use crate::store::{Store, WriteBatch};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use uuid::Uuid;

/// Largest plaintext Encrypt accepts.
pub const MAX_PLAINTEXT: usize = 4096;
const MAX_DESCRIPTION: usize = 8192;
const MAX_TAGS: usize = 50;
const MAX_RANDOM: u32 = 1024;
const MIN_ROTATION_DAYS: u32 = 90;
const MAX_ROTATION_DAYS: u32 = 2560;
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
const KEY_PREFIX: &[u8] = b"key/";
const ALIAS_PREFIX: &[u8] = b"alias/";

/// The service's settings.
#[derive(Debug, Clone)]
pub struct KeyServiceConfig {
    pub partition: String,
    pub region: String,
    pub account_id: String,
    /// Most keys the account may hold (all states but Deleted).
    pub key_quota: usize,
    pub default_keystore: String,
    pub default_rotation_period_days: u32,
    /// A version is rotated once it has done this many encryptions (2^32 by default).
    pub nonce_limit: u64,
    /// Encryption counts are reserved on disk this many at a time.
    pub nonce_reservation_block: u64,
}

impl KeyServiceConfig {
    pub fn new(account_id: impl Into<String>) -> Self {
        Self {
            partition: "keyhaven".into(),
            region: "local".into(),
            account_id: account_id.into(),
            key_quota: 100_000,
            default_keystore: crate::keystore::SEALED.into(),
            default_rotation_period_days: 365,
            nonce_limit: 1 << 32,
            nonce_reservation_block: 1 << 20,
        }
    }
}

/// Counts encryptions with the key's current version.
#[derive(Debug)]
struct NonceCounter {
    version: u32,
    used: AtomicU64,
    reserved: AtomicU64,
}

impl NonceCounter {
    fn new(version: &KeyVersion, used: u64) -> Arc<Self> {
        Arc::new(Self {
            version: version.number,
            used: AtomicU64::new(used),
            reserved: AtomicU64::new(version.nonces_reserved),
        })
    }
}

struct KeyEntry {
    /// Serialises changes to this key, across the wait for the disk.
    gate: tokio::sync::Mutex<()>,
    record: RwLock<Arc<KeyRecord>>,
    nonces: RwLock<Option<Arc<NonceCounter>>>,
    /// The parsed key policy, with the record it was parsed from.
    policy: std::sync::Mutex<Option<(Arc<KeyRecord>, Arc<Policy>)>>,
    /// The latest use, kept in memory and written to the record by the scheduler.
    last_use: std::sync::Mutex<Option<KeyUse>>,
}

impl KeyEntry {
    fn new(record: KeyRecord, fresh: bool) -> Self {
        // After a restart every reserved count is taken as used: counts never go backwards.
        let nonces = record.versions.last().map(|v| {
            let used = if fresh { 0 } else { v.nonces_reserved };
            NonceCounter::new(v, used)
        });
        Self {
            gate: tokio::sync::Mutex::new(()),
            record: RwLock::new(Arc::new(record)),
            nonces: RwLock::new(nonces),
            policy: std::sync::Mutex::new(None),
            last_use: std::sync::Mutex::new(None),
        }
    }

    fn record(&self) -> Arc<KeyRecord> {
        match self.record.read() {
            Ok(record) => record.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_record(&self, record: Arc<KeyRecord>) {
        match self.record.write() {
            Ok(mut slot) => *slot = record,
            Err(poisoned) => *poisoned.into_inner() = record,
        }
    }

    fn nonces(&self) -> Option<Arc<NonceCounter>> {
        match self.nonces.read() {
            Ok(n) => n.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set_nonces(&self, counter: Option<Arc<NonceCounter>>) {
        match self.nonces.write() {
            Ok(mut slot) => *slot = counter,
            Err(poisoned) => *poisoned.into_inner() = counter,
        }
    }
}

/// An alias as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasEntry {
    pub name: String,
    pub target: Uuid,
    pub created: UnixSeconds,
    pub updated: UnixSeconds,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    /// Pass back as the marker to get the next page; `None` on the last page.
    pub next_marker: Option<String>,
}

/// Size of a generated data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKeySize {
    Aes256,
    Aes128,
    Bytes(u32),
}

impl DataKeySize {
    /// From the request's `KeySpec` / `NumberOfBytes` (exactly one of them).
    pub fn from_request(key_spec: &str, number_of_bytes: Option<u32>) -> Result<Self, KeyError> {
        match (key_spec, number_of_bytes) {
            ("", None) => Err(KeyError::Validation(
                "one of KeySpec and NumberOfBytes is required".into(),
            )),
            ("", Some(n)) if (1..=MAX_RANDOM).contains(&n) => Ok(DataKeySize::Bytes(n)),
            ("", Some(n)) => Err(KeyError::Validation(format!(
                "NumberOfBytes must be between 1 and {MAX_RANDOM}; got {n}"
            ))),
            ("AES_256", None) => Ok(DataKeySize::Aes256),
            ("AES_128", None) => Ok(DataKeySize::Aes128),
            (_, Some(_)) => Err(KeyError::Validation(
                "KeySpec and NumberOfBytes are mutually exclusive".into(),
            )),
            (other, None) => Err(KeyError::Validation(format!(
                "KeySpec must be AES_256 or AES_128; got '{}'",
                printable(other)
            ))),
        }
    }

    fn len(self) -> usize {
        match self {
            DataKeySize::Aes256 => 32,
            DataKeySize::Aes128 => 16,
            DataKeySize::Bytes(n) => n as usize,
        }
    }
}

/// The result of a decryption.
#[derive(Debug)]
pub struct Decrypted {
    pub key_id: Uuid,
    pub plaintext: SecretBytes,
}

/// The key service.
/// Threads for start-up work that splits well (parsing and checking every key).
fn parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

pub struct KeyService {
    config: KeyServiceConfig,
    arn_prefix: String,
    clock: Arc<dyn Clock>,
    store: Arc<Store>,
    keystores: HashMap<String, Arc<dyn KeyStore>>,
    keys: RwLock<BTreeMap<Uuid, Arc<KeyEntry>>>,
    aliases: RwLock<BTreeMap<String, AliasEntry>>,
    /// The default key policy, parsed once and shared by every key that has no other.
    default_policy: Option<Arc<Policy>>,
    /// Serialises alias changes (and alias removal when a key is destroyed).
    alias_gate: tokio::sync::Mutex<()>,
    /// Keys in any state but Deleted, for the quota.
    live_keys: AtomicUsize,
    /// Keys whose material the start-up check (or a later one) did not find in the keystore.
    unavailable: RwLock<HashSet<Uuid>>,
    /// Attempts to use keys pending deletion (operators alert on this before material is gone).
    pending_deletion_uses: AtomicU64,
}

fn key_record_name(id: Uuid) -> Vec<u8> {
    let mut name = KEY_PREFIX.to_vec();
    name.extend_from_slice(id.hyphenated().to_string().as_bytes());
    name
}

fn alias_record_name(alias: &str) -> Vec<u8> {
    let mut name = ALIAS_PREFIX.to_vec();
    name.extend_from_slice(alias.as_bytes());
    name
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, KeyError> {
    serde_json::to_vec(value).map_err(|e| KeyError::Internal(format!("encode: {e}")))
}

fn keystore_error(store: &str, error: KeyStoreError) -> KeyError {
    if !matches!(error, KeyStoreError::DecryptFailed)
        && let Some(m) = crate::metrics::metrics()
    {
        m.keystore_errors.with_label_values(&[store]).inc();
    }
    match error {
        KeyStoreError::Unavailable(detail) => {
            tracing::warn!(keystore = store, %detail, "keystore unavailable");
            KeyError::KeyStoreUnavailable(format!(
                "keystore {store} is unavailable; try again later"
            ))
        }
        KeyStoreError::MaterialNotFound(material) => {
            tracing::error!(
                keystore = store,
                ?material,
                "key material is missing from its keystore"
            );
            KeyError::KeyStoreUnavailable(format!(
                "the material of key {} version {} is missing from keystore {store}",
                material.key_id, material.version
            ))
        }
        KeyStoreError::DecryptFailed => KeyError::InvalidCiphertext,
        other => KeyError::Internal(format!("keystore {store}: {other}")),
    }
}

fn observe_keystore(keystore: &str, operation: &str, started: std::time::Instant) {
    if let Some(m) = crate::metrics::metrics() {
        m.keystore_seconds
            .with_label_values(&[keystore, operation])
            .observe(started.elapsed().as_secs_f64());
    }
}

fn page_limit(limit: u32) -> Result<usize, KeyError> {
    match limit {
        0 => Ok(DEFAULT_PAGE),
        n if (n as usize) <= MAX_PAGE => Ok(n as usize),
        n => Err(KeyError::Validation(format!(
            "Limit must be between 1 and {MAX_PAGE}; got {n}"
        ))),
    }
}

fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), KeyError> {
    if tags.len() > MAX_TAGS {
        return Err(KeyError::LimitExceeded(format!(
            "a key has at most {MAX_TAGS} tags"
        )));
    }
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(KeyError::Validation(
                "TagKey must be 1 to 128 characters".into(),
            ));
        }
        if value.chars().count() > 256 {
            return Err(KeyError::Validation(
                "TagValue must be at most 256 characters".into(),
            ));
        }
    }
    Ok(())
}

fn validate_description(description: &str) -> Result<(), KeyError> {
    if description.chars().count() > MAX_DESCRIPTION {
        return Err(KeyError::Validation(format!(
            "Description must be at most {MAX_DESCRIPTION} characters"
        )));
    }
    Ok(())
}

fn validate_alias_name(name: &str) -> Result<(), KeyError> {
    let Some(rest) = name.strip_prefix("alias/") else {
        return Err(KeyError::Validation(format!(
            "alias name '{}' must begin with 'alias/'",
            printable(name)
        )));
    };
    if rest.is_empty()
        || name.len() > 256
        || !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-'))
    {
        return Err(KeyError::Validation(format!(
            "alias name '{}' must be 'alias/' followed by 1 to 250 of A-Z a-z 0-9 / _ -",
            printable(name)
        )));
    }
    if rest.starts_with("aws/") || rest == "aws" {
        return Err(KeyError::Validation(
            "alias names beginning with 'alias/aws/' are reserved".into(),
        ));
    }
    Ok(())
}

fn random_bytes(len: usize) -> SecretBytes {
    let mut bytes = SecretBytes::new(vec![0u8; len]);
    rand::rngs::OsRng.fill_bytes(bytes.expose_mut());
    bytes
}

impl KeyService {
    /// Loads every key and alias from the store.
    pub fn open(
        config: KeyServiceConfig,
        clock: Arc<dyn Clock>,
        store: Arc<Store>,
        keystores: Vec<Arc<dyn KeyStore>>,
    ) -> Result<Self, KeyError> {
        let keystores: HashMap<_, _> = keystores
            .into_iter()
            .map(|k| (k.name().to_owned(), k))
            .collect();
        if !keystores.contains_key(&config.default_keystore) {
            return Err(KeyError::KeyStoreNotFound(format!(
                "the default keystore '{}' is not configured",
                config.default_keystore
            )));
        }
        let mut keys = BTreeMap::new();
        let mut live = 0;
        let stored = store.scan(KEY_PREFIX, None, usize::MAX)?;
        // Parsing is most of the start-up time of a large store: spread it over the cores.
        let chunk = stored.len().div_ceil(parallelism()).max(1);
        let parsed: Vec<Result<Vec<KeyRecord>, KeyError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = stored
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|(name, value)| {
                                serde_json::from_slice::<KeyRecord>(value).map_err(|e| {
                                    KeyError::Internal(format!(
                                        "key record {} is damaged: {e}",
                                        String::from_utf8_lossy(name)
                                    ))
                                })
                            })
                            .collect()
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(KeyError::Internal("key loader failed".into())))
                })
                .collect()
        });
        drop(stored);
        for record in parsed
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flatten()
        {
            if record.state != KeyState::Deleted {
                live += 1;
                if !keystores.contains_key(&record.keystore) {
                    tracing::error!(key = %record.id, keystore = %record.keystore,
                        "key lives in a keystore that is not configured; its operations will fail");
                }
            }
            keys.insert(record.id, Arc::new(KeyEntry::new(record, false)));
        }
        let mut aliases = BTreeMap::new();
        for (name, value) in store.scan(ALIAS_PREFIX, None, usize::MAX)? {
            let alias: AliasEntry = serde_json::from_slice(&value).map_err(|e| {
                KeyError::Internal(format!(
                    "alias record {} is damaged: {e}",
                    String::from_utf8_lossy(&name)
                ))
            })?;
            aliases.insert(alias.name.clone(), alias);
        }
        let default_policy = Policy::parse(
            &default_key_policy(&config.partition, &config.account_id),
            PolicyKind::Resource,
        )
        .ok()
        .map(Arc::new);
        Ok(Self {
            arn_prefix: arn_prefix(&config.partition, &config.region, &config.account_id),
            default_policy,
            config,
            clock,
            store,
            keystores,
            keys: RwLock::new(keys),
            aliases: RwLock::new(aliases),
            alias_gate: tokio::sync::Mutex::new(()),
            live_keys: AtomicUsize::new(live),
            unavailable: RwLock::new(HashSet::new()),
            pending_deletion_uses: AtomicU64::new(0),
        })
    }

    pub fn config(&self) -> &KeyServiceConfig {
        &self.config
    }

    pub fn now(&self) -> UnixSeconds {
        self.clock.now()
    }

    pub fn key_arn(&self, id: Uuid) -> String {
        format!("{}key/{}", self.arn_prefix, id.hyphenated())
    }

    pub fn alias_arn(&self, alias: &str) -> String {
        format!("{}{alias}", self.arn_prefix)
    }

    /// Checks every key's material against its keystore (run at start-up); returns the keys
    /// with missing material and marks them unavailable.
    pub fn check_material(&self) -> Vec<(Uuid, String)> {
        let ids: Vec<Uuid> = self.entries().iter().map(|e| e.record().id).collect();
        self.check_keys(&ids)
    }

    /// Checks again the keys marked unavailable; those whose material is back are cleared.
    pub fn recheck_unavailable(&self) -> Vec<(Uuid, String)> {
        let ids: Vec<Uuid> = self
            .unavailable
            .read()
            .map(|u| u.iter().copied().collect())
            .unwrap_or_default();
        if ids.is_empty() {
            return Vec::new();
        }
        self.check_keys(&ids)
    }

    /// Destroys material the keystores hold that no key version names (left by a create or
    /// rotation cut short by a crash). Run at start-up, before serving.
    pub fn remove_orphans(&self) -> Vec<(MaterialRef, Result<(), KeyError>)> {
        let known: std::collections::HashSet<MaterialRef> = self
            .entries()
            .iter()
            .flat_map(|entry| {
                let record = entry.record();
                record
                    .versions
                    .iter()
                    .map(|v| MaterialRef {
                        key_id: record.id,
                        version: v.number,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut outcomes = Vec::new();
        for keystore in self.keystores.values() {
            let held = match keystore.list() {
                Ok(held) => held,
                Err(error) => {
                    tracing::error!(keystore = keystore.name(), %error, "cannot list key material");
                    continue;
                }
            };
            for material in held.into_iter().filter(|m| !known.contains(m)) {
                let result = keystore
                    .destroy(material)
                    .map(|_| ())
                    .map_err(|e| keystore_error(keystore.name(), e));
                outcomes.push((material, result));
            }
        }
        outcomes
    }

    /// Whether the key's material was missing when last checked.
    pub fn is_unavailable(&self, id: Uuid) -> bool {
        self.unavailable
            .read()
            .map(|u| u.contains(&id))
            .unwrap_or(false)
    }

    /// Checks `ids` on every core: at start-up that is every key in the store.
    fn check_keys(&self, ids: &[Uuid]) -> Vec<(Uuid, String)> {
        let chunk = ids.len().div_ceil(parallelism()).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = ids
                .chunks(chunk)
                .map(|part| scope.spawn(move || self.check_keys_here(part)))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        })
    }

    fn check_keys_here(&self, ids: &[Uuid]) -> Vec<(Uuid, String)> {
        let mut problems = Vec::new();
        for id in ids {
            let Some(entry) = self.entry_by_id(*id) else {
                continue;
            };
            let record = entry.record();
            let before = problems.len();
            self.check_record(&record, &mut problems);
            if let Ok(mut unavailable) = self.unavailable.write() {
                if problems.len() > before {
                    unavailable.insert(record.id);
                } else {
                    unavailable.remove(&record.id);
                }
            }
        }
        problems
    }

    fn check_record(&self, record: &KeyRecord, problems: &mut Vec<(Uuid, String)>) {
        if record.state == KeyState::Deleted {
            return;
        }
        let Some(keystore) = self.keystores.get(&record.keystore) else {
            problems.push((
                record.id,
                format!("keystore {} is not configured", record.keystore),
            ));
            return;
        };
        for version in &record.versions {
            let material = MaterialRef {
                key_id: record.id,
                version: version.number,
            };
            if let Err(error) = keystore.check(material) {
                problems.push((record.id, format!("version {}: {error}", version.number)));
            }
        }
    }

    /// How many keys (tombstones included) the service holds.
    pub fn count(&self) -> usize {
        self.keys.read().map(|k| k.len()).unwrap_or(0)
    }

    fn entries(&self) -> Vec<Arc<KeyEntry>> {
        self.keys
            .read()
            .map(|k| k.values().cloned().collect())
            .unwrap_or_default()
    }

    fn entry_by_id(&self, id: Uuid) -> Option<Arc<KeyEntry>> {
        self.keys.read().ok()?.get(&id).cloned()
    }

    fn not_found(input: &str) -> KeyError {
        KeyError::NotFound(format!("key '{}' does not exist", printable(input)))
    }

    /// Resolves any key form to its entry; Deleted keys only when `include_deleted`.
    fn resolve(&self, key: &str, include_deleted: bool) -> Result<Arc<KeyEntry>, KeyError> {
        let id = match KeyReference::parse(key, &self.arn_prefix)? {
            KeyReference::Id(id) => id,
            KeyReference::Alias(alias) => self
                .aliases
                .read()
                .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
                .get(&alias)
                .map(|a| a.target)
                .ok_or_else(|| {
                    KeyError::NotFound(format!("alias '{}' does not exist", printable(&alias)))
                })?,
        };
        let entry = self.entry_by_id(id).ok_or_else(|| Self::not_found(key))?;
        if !include_deleted && entry.record().state == KeyState::Deleted {
            return Err(Self::not_found(key));
        }
        Ok(entry)
    }

    /// The key a reference names, for authorisation before acting (Deleted keys only when
    /// `include_deleted`).
    pub fn lookup(&self, key: &str, include_deleted: bool) -> Result<Arc<KeyRecord>, KeyError> {
        Ok(self.resolve(key, include_deleted)?.record())
    }

    /// The default key policy of this account, parsed.
    pub fn default_policy(&self) -> Option<Arc<Policy>> {
        self.default_policy.clone()
    }

    /// The key's policy, parsed (cached until the record changes).
    pub fn key_policy(&self, id: Uuid) -> Option<NamedPolicy> {
        let entry = self.entry_by_id(id)?;
        let record = entry.record();
        let mut cache = entry.policy.lock().ok()?;
        if let Some((cached_for, policy)) = cache.as_ref()
            && Arc::ptr_eq(cached_for, &record)
        {
            return Some(NamedPolicy {
                name: "key policy".into(),
                policy: policy.clone(),
            });
        }
        let policy = match &record.policy {
            Some(text) => Arc::new(Policy::parse(text, PolicyKind::Resource).ok()?),
            None => self.default_policy.clone()?,
        };
        *cache = Some((record, policy.clone()));
        Some(NamedPolicy {
            name: "key policy".into(),
            policy,
        })
    }

    /// GetKeyPolicy: the policy text (the default one for keys made without).
    pub fn get_key_policy(&self, key: &str) -> Result<String, KeyError> {
        let record = self.resolve(key, false)?.record();
        Ok(record
            .policy
            .clone()
            .unwrap_or_else(|| default_key_policy(&self.config.partition, &self.config.account_id)))
    }

    /// PutKeyPolicy (the lockout check is the caller's: it needs the caller's identity).
    pub async fn put_key_policy(&self, key: &str, text: String) -> Result<(), KeyError> {
        Policy::parse(&text, PolicyKind::Resource).map_err(|e| KeyError::MalformedPolicy(e.0))?;
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("PutKeyPolicy")?;
            record.policy = Some(text);
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    /// The id a key reference names (any form), for callers that need it before acting.
    pub fn resolve_id(&self, key: &str) -> Result<Uuid, KeyError> {
        Ok(self.resolve(key, false)?.record().id)
    }

    fn keystore(&self, name: &str) -> Result<Arc<dyn KeyStore>, KeyError> {
        self.keystores.get(name).cloned().ok_or_else(|| {
            KeyError::KeyStoreUnavailable(format!("keystore {name} is not configured"))
        })
    }

    /// Runs a keystore call, on a blocking thread when the keystore may block (waited for up
    /// to its deadline, when it has one). `generates` names the version `call` generates.
    async fn on_keystore<T, F>(
        &self,
        keystore: &Arc<dyn KeyStore>,
        operation: &'static str,
        generates: Option<MaterialRef>,
        call: F,
    ) -> Result<T, KeyError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let result = if let Some(bounded) = keystore.deadline() {
            bounded.run(operation, generates, call).await
        } else if keystore.blocks() {
            let keystore = keystore.clone();
            tokio::task::spawn_blocking(move || call(&*keystore))
                .await
                .map_err(|e| KeyError::Internal(format!("keystore task: {e}")))?
        } else {
            call(&**keystore)
        };
        observe_keystore(keystore.name(), operation, started);
        result.map_err(|e| keystore_error(keystore.name(), e))
    }

    /// Applies `change` to a copy of the key's record and commits it (with `extra` records);
    /// readers see the new record only once it is durable.
    async fn change_key<F>(&self, entry: &KeyEntry, change: F) -> Result<Arc<KeyRecord>, KeyError>
    where
        F: FnOnce(&mut KeyRecord) -> Result<WriteBatch, KeyError>,
    {
        let _gate = entry.gate.lock().await;
        self.change_key_locked(entry, change).await
    }

    async fn change_key_locked<F>(
        &self,
        entry: &KeyEntry,
        change: F,
    ) -> Result<Arc<KeyRecord>, KeyError>
    where
        F: FnOnce(&mut KeyRecord) -> Result<WriteBatch, KeyError>,
    {
        let mut record = (*entry.record()).clone();
        let mut batch = change(&mut record)?;
        batch.put(key_record_name(record.id), encode(&record)?);
        self.store.commit(batch).await?;
        let record = Arc::new(record);
        entry.set_record(record.clone());
        Ok(record)
    }

    // ---------------------------------------------------------------- lifecycle

    /// CreateKey: generates version 1 in the chosen keystore and records the key.
    pub async fn create_key(
        &self,
        description: String,
        keystore: Option<&str>,
        tags: BTreeMap<String, String>,
        policy: Option<String>,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        validate_description(&description)?;
        validate_tags(&tags)?;
        let policy = match policy {
            Some(text) => {
                Policy::parse(&text, PolicyKind::Resource)
                    .map_err(|e| KeyError::MalformedPolicy(e.0))?;
                text
            }
            None => default_key_policy(&self.config.partition, &self.config.account_id),
        };
        let policy = Some(policy);
        let keystore_name = match keystore {
            // `pkcs11` names the PKCS#11 keystore when there is exactly one.
            Some("pkcs11") => {
                let mut hsms = self.keystores.keys().filter(|k| k.starts_with("pkcs11:"));
                match (hsms.next(), hsms.next()) {
                    (Some(only), None) => only.as_str(),
                    _ => "pkcs11",
                }
            }
            Some(name) => name,
            None => &self.config.default_keystore,
        };
        let keystore = self.keystores.get(keystore_name).cloned().ok_or_else(|| {
            let mut known: Vec<_> = self.keystores.keys().cloned().collect();
            known.sort();
            KeyError::KeyStoreNotFound(format!(
                "keystore '{}' is not configured; configured: {}",
                printable(keystore_name),
                known.join(", ")
            ))
        })?;
        if self.live_keys.fetch_add(1, Ordering::SeqCst) >= self.config.key_quota {
            self.live_keys.fetch_sub(1, Ordering::SeqCst);
            return Err(KeyError::LimitExceeded(format!(
                "the account already has the most keys it may hold ({})",
                self.config.key_quota
            )));
        }
        let result = self
            .create_key_counted(description, keystore, tags, policy)
            .await;
        if result.is_err() {
            self.live_keys.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }

    async fn create_key_counted(
        &self,
        description: String,
        keystore: Arc<dyn KeyStore>,
        tags: BTreeMap<String, String>,
        policy: Option<String>,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        let now = self.now();
        let id = Uuid::new_v4();
        let material = MaterialRef {
            key_id: id,
            version: 1,
        };
        let generated = self
            .on_keystore(&keystore, "generate", Some(material), move |k| {
                k.generate(material)
            })
            .await?;
        let record = KeyRecord {
            id,
            description,
            state: KeyState::Enabled,
            created: now,
            deletion_date: None,
            pending_window_days: None,
            keystore: keystore.name().to_owned(),
            origin: keystore.origin().to_owned(),
            versions: vec![KeyVersion {
                number: 1,
                created: now,
                rotation_type: RotationType::Initial,
                nonces_reserved: self.config.nonce_reservation_block,
            }],
            tags,
            policy,
            rotation: RotationSchedule::default(),
            last_used: None,
        };
        let mut batch = generated.records;
        let committed = async {
            batch.put(key_record_name(id), encode(&record)?);
            self.store.commit(batch).await?;
            Ok::<_, KeyError>(())
        }
        .await;
        if let Err(error) = committed {
            let undo = keystore.clone();
            let _ = self
                .on_keystore(&undo, "discard", None, move |k| {
                    k.discard(material);
                    Ok(())
                })
                .await;
            return Err(error);
        }
        let entry = Arc::new(KeyEntry::new(record, true));
        let record = entry.record();
        self.keys
            .write()
            .map_err(|_| KeyError::Internal("key map lock poisoned".into()))?
            .insert(id, entry);
        Ok(record)
    }

    /// DescribeKey: also answers for Deleted keys (their tombstone).
    pub fn describe_key(&self, key: &str) -> Result<Arc<KeyRecord>, KeyError> {
        Ok(self.resolve(key, true)?.record())
    }

    /// ListKeys: a page of keys in id order (Deleted keys are not listed).
    pub fn list_keys(&self, limit: u32, marker: &str) -> Result<ListPage<Uuid>, KeyError> {
        let limit = page_limit(limit)?;
        let start = if marker.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(
                Uuid::try_parse(marker)
                    .map_err(|_| KeyError::Validation("Marker is not valid".into()))?,
            )
        };
        let keys = self
            .keys
            .read()
            .map_err(|_| KeyError::Internal("key map lock poisoned".into()))?;
        let mut items = Vec::with_capacity(limit);
        let mut more = false;
        for (id, entry) in keys.range((start, Bound::Unbounded)) {
            if entry.record().state == KeyState::Deleted {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(*id);
        }
        let next_marker = if more {
            items.last().map(|id| id.hyphenated().to_string())
        } else {
            None
        };
        Ok(ListPage { items, next_marker })
    }

    pub async fn update_description(&self, key: &str, description: String) -> Result<(), KeyError> {
        validate_description(&description)?;
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("UpdateKeyDescription")?;
            record.description = description;
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub async fn enable_key(&self, key: &str) -> Result<(), KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| record.enable().map(|_| WriteBatch::new()))
            .await
            .map(|_| ())
    }

    pub async fn disable_key(&self, key: &str) -> Result<(), KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| record.disable().map(|_| WriteBatch::new()))
            .await
            .map(|_| ())
    }

    /// ScheduleKeyDeletion: returns the key as now recorded (with its deletion date).
    pub async fn schedule_deletion(
        &self,
        key: &str,
        pending_days: Option<u32>,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        let entry = self.resolve(key, false)?;
        let now = self.now();
        self.change_key(&entry, |record| {
            record
                .schedule_deletion(now, pending_days.or(Some(DEFAULT_PENDING_DAYS)))
                .map(|_| WriteBatch::new())
        })
        .await
    }

    pub async fn cancel_deletion(&self, key: &str) -> Result<Arc<KeyRecord>, KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.cancel_deletion().map(|_| WriteBatch::new())
        })
        .await
    }

    /// Destroys a key whose deletion date has passed: material first, then the tombstone.
    /// Returns whether it was destroyed now.
    pub(crate) async fn destroy_if_due(&self, id: Uuid) -> Result<bool, KeyError> {
        let Some(entry) = self.entry_by_id(id) else {
            return Ok(false);
        };
        let _gate = entry.gate.lock().await;
        let now = self.now();
        let record = entry.record();
        if !record.deletion_due(now) {
            return Ok(false);
        }
        let keystore = self.keystore(&record.keystore)?;
        let mut batch = WriteBatch::new();
        for version in &record.versions {
            let material = MaterialRef {
                key_id: id,
                version: version.number,
            };
            let records = self
                .on_keystore(&keystore, "destroy", None, move |k| {
                    match k.destroy(material) {
                        Err(KeyStoreError::MaterialNotFound(_)) => Ok(WriteBatch::new()),
                        other => other,
                    }
                })
                .await?;
            batch.extend(records);
        }
        let _aliases = self.alias_gate.lock().await;
        let doomed: Vec<String> = self
            .aliases
            .read()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .values()
            .filter(|a| a.target == id)
            .map(|a| a.name.clone())
            .collect();
        for alias in &doomed {
            batch.delete(alias_record_name(alias));
        }
        self.change_key_locked(&entry, move |record| {
            record.mark_deleted(now)?;
            Ok(batch)
        })
        .await?;
        if let Ok(mut aliases) = self.aliases.write() {
            for alias in &doomed {
                aliases.remove(alias);
            }
        }
        entry.set_nonces(None);
        self.live_keys.fetch_sub(1, Ordering::SeqCst);
        tracing::info!(key = %id, "key material destroyed; tombstone kept");
        Ok(true)
    }

    /// Ids of keys whose deletion date has passed, or whose automatic rotation is due.
    pub(crate) fn due_keys(&self, now: UnixSeconds) -> (Vec<Uuid>, Vec<Uuid>) {
        let mut deletions = Vec::new();
        let mut rotations = Vec::new();
        for entry in self.entries() {
            let record = entry.record();
            if record.deletion_due(now) {
                deletions.push(record.id);
            } else if record.state == KeyState::Enabled
                && record.rotation.enabled
                && record.rotation.next_rotation.is_some_and(|n| n <= now)
            {
                rotations.push(record.id);
            }
        }
        (deletions, rotations)
    }

    // ---------------------------------------------------------------- aliases

    fn alias_target(&self, target: &str) -> Result<Arc<KeyEntry>, KeyError> {
        match KeyReference::parse(target, &self.arn_prefix)? {
            KeyReference::Alias(_) => Err(KeyError::Validation(
                "TargetKeyId must be a key id or key ARN, not an alias".into(),
            )),
            KeyReference::Id(_) => {
                let entry = self.resolve(target, false)?;
                entry.record().require_active("CreateAlias")?;
                Ok(entry)
            }
        }
    }

    pub async fn create_alias(&self, alias: &str, target: &str) -> Result<(), KeyError> {
        validate_alias_name(alias)?;
        let _gate = self.alias_gate.lock().await;
        let entry = self.alias_target(target)?;
        if self.alias(alias)?.is_some() {
            return Err(KeyError::AlreadyExists(format!(
                "alias '{alias}' already exists"
            )));
        }
        let now = self.now();
        let record = AliasEntry {
            name: alias.to_owned(),
            target: entry.record().id,
            created: now,
            updated: now,
        };
        self.write_alias(record).await
    }

    pub async fn update_alias(&self, alias: &str, target: &str) -> Result<(), KeyError> {
        validate_alias_name(alias)?;
        let _gate = self.alias_gate.lock().await;
        let entry = self.alias_target(target)?;
        let mut record = self.alias(alias)?.ok_or_else(|| {
            KeyError::NotFound(format!("alias '{}' does not exist", printable(alias)))
        })?;
        record.target = entry.record().id;
        record.updated = self.now();
        self.write_alias(record).await
    }

    pub async fn delete_alias(&self, alias: &str) -> Result<(), KeyError> {
        validate_alias_name(alias)?;
        let _gate = self.alias_gate.lock().await;
        if self.alias(alias)?.is_none() {
            return Err(KeyError::NotFound(format!(
                "alias '{}' does not exist",
                printable(alias)
            )));
        }
        let mut batch = WriteBatch::new();
        batch.delete(alias_record_name(alias));
        self.store.commit(batch).await?;
        self.aliases
            .write()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .remove(alias);
        Ok(())
    }

    fn alias(&self, alias: &str) -> Result<Option<AliasEntry>, KeyError> {
        Ok(self
            .aliases
            .read()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .get(alias)
            .cloned())
    }

    async fn write_alias(&self, record: AliasEntry) -> Result<(), KeyError> {
        let mut batch = WriteBatch::new();
        batch.put(alias_record_name(&record.name), encode(&record)?);
        self.store.commit(batch).await?;
        self.aliases
            .write()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?
            .insert(record.name.clone(), record);
        Ok(())
    }

    /// ListAliases: a page in name order, optionally only those of one key.
    pub fn list_aliases(
        &self,
        key: Option<&str>,
        limit: u32,
        marker: &str,
    ) -> Result<ListPage<AliasEntry>, KeyError> {
        let limit = page_limit(limit)?;
        let target = key.map(|k| self.resolve_id(k)).transpose()?;
        let aliases = self
            .aliases
            .read()
            .map_err(|_| KeyError::Internal("alias lock poisoned".into()))?;
        let start = if marker.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(marker.to_owned())
        };
        let mut items = Vec::with_capacity(limit.min(64));
        let mut more = false;
        for alias in aliases.range((start, Bound::Unbounded)).map(|(_, a)| a) {
            if target.is_some_and(|t| t != alias.target) {
                continue;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(alias.clone());
        }
        let next_marker = if more {
            items.last().map(|a| a.name.clone())
        } else {
            None
        };
        Ok(ListPage { items, next_marker })
    }

    // ---------------------------------------------------------------- tags

    pub async fn tag_key(&self, key: &str, tags: BTreeMap<String, String>) -> Result<(), KeyError> {
        validate_tags(&tags)?;
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("TagResource")?;
            record.tags.extend(tags);
            validate_tags(&record.tags)?;
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub async fn untag_key(&self, key: &str, tag_keys: Vec<String>) -> Result<(), KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("UntagResource")?;
            for tag in &tag_keys {
                record.tags.remove(tag);
            }
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub fn list_tags(&self, key: &str) -> Result<BTreeMap<String, String>, KeyError> {
        Ok(self.resolve(key, false)?.record().tags.clone())
    }

    // ---------------------------------------------------------------- rotation

    /// Adds a version; the caller holds the key's gate.
    async fn rotate_locked(
        &self,
        entry: &KeyEntry,
        kind: RotationType,
    ) -> Result<Arc<KeyRecord>, KeyError> {
        let record = entry.record();
        let keystore = self.keystore(&record.keystore)?;
        let now = self.now();
        let number = record.current_version().checked_add(1).ok_or_else(|| {
            KeyError::LimitExceeded("the key has reached its last version".into())
        })?;
        let material = MaterialRef {
            key_id: record.id,
            version: number,
        };
        let generated = self
            .on_keystore(&keystore, "generate", Some(material), move |k| {
                k.generate(material)
            })
            .await?;
        let block = self.config.nonce_reservation_block;
        let result = self
            .change_key_locked(entry, move |record| {
                record.versions.push(KeyVersion {
                    number,
                    created: now,
                    rotation_type: kind,
                    nonces_reserved: block,
                });
                // On-demand rotation leaves the automatic schedule as it was (as AWS KMS does).
                if let (RotationType::Automatic, Some(days)) = (kind, record.rotation.period_days) {
                    record.rotation.next_rotation = Some(now + i64::from(days) * DAY);
                }
                Ok(generated.records)
            })
            .await;
        match result {
            Ok(record) => {
                if let Some(version) = record.versions.last() {
                    entry.set_nonces(Some(NonceCounter::new(version, 0)));
                }
                tracing::info!(key = %record.id, version = number, kind = kind.as_str(), "key rotated");
                Ok(record)
            }
            Err(error) => {
                let _ = self
                    .on_keystore(&keystore, "discard", None, move |k| {
                        k.discard(material);
                        Ok(())
                    })
                    .await;
                Err(error)
            }
        }
    }

    /// RotateKeyOnDemand.
    pub async fn rotate_key(&self, key: &str) -> Result<Arc<KeyRecord>, KeyError> {
        let entry = self.resolve(key, false)?;
        let _gate = entry.gate.lock().await;
        entry.record().require_enabled("RotateKeyOnDemand")?;
        self.rotate_locked(&entry, RotationType::OnDemand).await
    }

    /// Automatic rotation, when its date has come (scheduler).
    pub(crate) async fn rotate_if_due(&self, id: Uuid) -> Result<bool, KeyError> {
        let Some(entry) = self.entry_by_id(id) else {
            return Ok(false);
        };
        let _gate = entry.gate.lock().await;
        let record = entry.record();
        let due = record.state == KeyState::Enabled
            && record.rotation.enabled
            && record
                .rotation
                .next_rotation
                .is_some_and(|n| n <= self.now());
        if !due {
            return Ok(false);
        }
        self.rotate_locked(&entry, RotationType::Automatic).await?;
        Ok(true)
    }

    pub async fn enable_rotation(
        &self,
        key: &str,
        period_days: Option<u32>,
    ) -> Result<(), KeyError> {
        let days = period_days.unwrap_or(self.config.default_rotation_period_days);
        if !(MIN_ROTATION_DAYS..=MAX_ROTATION_DAYS).contains(&days) {
            return Err(KeyError::Validation(format!(
                "RotationPeriodInDays must be between {MIN_ROTATION_DAYS} and {MAX_ROTATION_DAYS}; got {days}"
            )));
        }
        let entry = self.resolve(key, false)?;
        let now = self.now();
        self.change_key(&entry, |record| {
            record.require_enabled("EnableKeyRotation")?;
            record.rotation = RotationSchedule {
                enabled: true,
                period_days: Some(days),
                next_rotation: Some(now + i64::from(days) * DAY),
            };
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub async fn disable_rotation(&self, key: &str) -> Result<(), KeyError> {
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("DisableKeyRotation")?;
            record.rotation.enabled = false;
            record.rotation.next_rotation = None;
            Ok(WriteBatch::new())
        })
        .await
        .map(|_| ())
    }

    pub fn rotation_status(&self, key: &str) -> Result<Arc<KeyRecord>, KeyError> {
        Ok(self.resolve(key, false)?.record())
    }

    // ---------------------------------------------------------------- cryptography

    /// Refuses unless the key may be used now; a key pending deletion is logged and counted.
    fn require_usable(&self, record: &KeyRecord, operation: &str) -> Result<(), KeyError> {
        let result = record.require_enabled(operation);
        if result.is_err() && record.state == KeyState::PendingDeletion {
            self.pending_deletion_uses.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = crate::metrics::metrics() {
                m.pending_deletion_uses.inc();
            }
            tracing::warn!(key = %record.id, operation, deletion_date = ?record.deletion_date,
                "attempt to use a key pending deletion: something still depends on it");
        }
        result
    }

    /// Keys by state (for the `keys` gauge).
    pub fn count_by_state(&self) -> BTreeMap<&'static str, i64> {
        let mut counts = BTreeMap::new();
        for state in [
            KeyState::Enabled,
            KeyState::Disabled,
            KeyState::PendingDeletion,
            KeyState::Deleted,
        ] {
            counts.insert(state.as_str(), 0);
        }
        for entry in self.entries() {
            *counts.entry(entry.record().state.as_str()).or_insert(0) += 1;
        }
        counts
    }

    /// How many calls tried to use a key pending deletion since start-up.
    pub fn pending_deletion_uses(&self) -> u64 {
        self.pending_deletion_uses.load(Ordering::Relaxed)
    }

    fn note_use(&self, entry: &KeyEntry, operation: &str) {
        let now = self.now();
        if let Ok(mut last) = entry.last_use.lock() {
            // Same second, same operation: nothing new to say.
            if last
                .as_ref()
                .is_some_and(|u| u.time == now && u.operation == operation)
            {
                return;
            }
            *last = Some(KeyUse {
                time: now,
                operation: operation.to_owned(),
            });
        }
    }

    /// The latest use of a key, recorded or not yet.
    pub fn last_use(&self, record: &KeyRecord) -> Option<KeyUse> {
        let in_memory = self
            .entry_by_id(record.id)
            .and_then(|e| e.last_use.lock().ok().and_then(|u| u.clone()));
        match (in_memory, &record.last_used) {
            (Some(m), Some(r)) if r.time > m.time => Some(r.clone()),
            (Some(m), _) => Some(m),
            (None, r) => r.clone(),
        }
    }

    /// Writes the uses seen since the last call into the key records (the scheduler does
    /// this; a use is not worth a disk write per request).
    pub async fn record_uses(&self) {
        for entry in self.entries() {
            let Some(seen) = entry.last_use.lock().ok().and_then(|u| u.clone()) else {
                continue;
            };
            if entry.record().last_used.as_ref() == Some(&seen) {
                continue;
            }
            let result = self
                .change_key(&entry, |record| {
                    if record
                        .last_used
                        .as_ref()
                        .is_none_or(|r| r.time <= seen.time)
                    {
                        record.last_used = Some(seen.clone());
                    }
                    Ok(WriteBatch::new())
                })
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "could not record a key's last use");
            }
        }
    }

    /// Takes one encryption count from the key's current version, reserving more on disk or
    /// rotating when needed. Returns the version to encrypt with.
    async fn take_nonce(&self, entry: &KeyEntry, operation: &str) -> Result<u32, KeyError> {
        loop {
            self.require_usable(&entry.record(), operation)?;
            let counter = entry
                .nonces()
                .ok_or_else(|| KeyError::Internal("key has no versions".into()))?;
            let count = counter.used.fetch_add(1, Ordering::Relaxed);
            if count >= self.config.nonce_limit {
                let _gate = entry.gate.lock().await;
                if entry.nonces().is_some_and(|c| c.version == counter.version) {
                    entry.record().require_enabled(operation)?;
                    self.rotate_locked(entry, RotationType::NonceLimit).await?;
                }
                continue;
            }
            if count < counter.reserved.load(Ordering::Acquire) {
                return Ok(counter.version);
            }
            let _gate = entry.gate.lock().await;
            if !entry.nonces().is_some_and(|c| Arc::ptr_eq(&c, &counter)) {
                continue;
            }
            if count >= counter.reserved.load(Ordering::Acquire) {
                let reserved = count
                    .saturating_add(1)
                    .saturating_add(self.config.nonce_reservation_block)
                    .min(self.config.nonce_limit);
                let version = counter.version;
                self.change_key_locked(entry, |record| {
                    let stored = record.version_mut(version).ok_or_else(|| {
                        KeyError::Internal("current version missing from record".into())
                    })?;
                    stored.nonces_reserved = stored.nonces_reserved.max(reserved);
                    Ok(WriteBatch::new())
                })
                .await?;
                counter.reserved.fetch_max(reserved, Ordering::AcqRel);
            }
            return Ok(counter.version);
        }
    }

    /// Encrypts under the key's current version; returns the blob.
    async fn encrypt_with(
        &self,
        entry: &KeyEntry,
        plaintext: &[u8],
        context: &EncryptionContext,
        operation: &str,
    ) -> Result<Vec<u8>, KeyError> {
        let version = self.take_nonce(entry, operation).await?;
        self.note_use(entry, operation);
        let record = entry.record();
        let keystore = self.keystore(&record.keystore)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let material = MaterialRef {
            key_id: record.id,
            version,
        };
        let aad = CiphertextBlob::aad(record.id, version, &nonce, context);
        let sealed = if keystore.blocks() {
            let plaintext = SecretBytes::new(plaintext.to_vec());
            self.on_keystore(&keystore, "encrypt", None, move |k| {
                k.encrypt(material, &nonce, &aad, plaintext.expose())
            })
            .await?
        } else {
            let started = std::time::Instant::now();
            let sealed = keystore.encrypt(material, &nonce, &aad, plaintext);
            observe_keystore(keystore.name(), "encrypt", started);
            sealed.map_err(|e| keystore_error(keystore.name(), e))?
        };
        Ok(CiphertextBlob::assemble(
            record.id, version, &nonce, &sealed,
        ))
    }

    /// Encrypt: returns the ciphertext blob and the key's id.
    pub async fn encrypt(
        &self,
        key: &str,
        plaintext: &[u8],
        context: &EncryptionContext,
    ) -> Result<(Vec<u8>, Uuid), KeyError> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(KeyError::Validation(format!(
                "Plaintext must be 1 to {MAX_PLAINTEXT} bytes; got {}",
                plaintext.len()
            )));
        }
        let entry = self.resolve(key, false)?;
        let blob = self
            .encrypt_with(&entry, plaintext, context, "Encrypt")
            .await?;
        Ok((blob, entry.record().id))
    }

    /// Decrypt. Every failure to open the blob is the same [`KeyError::InvalidCiphertext`].
    pub async fn decrypt(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        expected_key: Option<&str>,
    ) -> Result<Decrypted, KeyError> {
        self.decrypt_as(blob, context, expected_key, "Decrypt")
            .await
    }

    async fn decrypt_as(
        &self,
        blob: &[u8],
        context: &EncryptionContext,
        expected_key: Option<&str>,
        operation: &str,
    ) -> Result<Decrypted, KeyError> {
        let parsed = CiphertextBlob::parse(blob).map_err(|_| KeyError::InvalidCiphertext)?;
        if let Some(expected) = expected_key {
            let expected = self.resolve_id(expected)?;
            if expected != parsed.key_id {
                return Err(KeyError::IncorrectKey(
                    "the ciphertext was not made under the key given".into(),
                ));
            }
        }
        let entry = self
            .entry_by_id(parsed.key_id)
            .ok_or(KeyError::InvalidCiphertext)?;
        let record = entry.record();
        if record.state == KeyState::Deleted {
            return Err(KeyError::InvalidCiphertext);
        }
        self.require_usable(&record, operation)?;
        self.note_use(&entry, operation);
        if record.version(parsed.key_version).is_none() {
            return Err(KeyError::InvalidCiphertext);
        }
        let keystore = self.keystore(&record.keystore)?;
        let material = MaterialRef {
            key_id: record.id,
            version: parsed.key_version,
        };
        let aad = parsed.aad_for(context);
        let nonce = parsed.nonce;
        let plaintext = if keystore.blocks() {
            let sealed = parsed.sealed.to_vec();
            self.on_keystore(&keystore, "decrypt", None, move |k| {
                k.decrypt(material, &nonce, &aad, &sealed)
            })
            .await?
        } else {
            let started = std::time::Instant::now();
            let opened = keystore.decrypt(material, &nonce, &aad, parsed.sealed);
            observe_keystore(keystore.name(), "decrypt", started);
            opened.map_err(|e| keystore_error(keystore.name(), e))?
        };
        Ok(Decrypted {
            key_id: record.id,
            plaintext,
        })
    }

    /// ReEncrypt: decrypts and encrypts again inside the daemon; returns the new blob, the
    /// source key id and the destination key id.
    pub async fn re_encrypt(
        &self,
        blob: &[u8],
        source_context: &EncryptionContext,
        source_key: Option<&str>,
        destination_key: &str,
        destination_context: &EncryptionContext,
    ) -> Result<(Vec<u8>, Uuid, Uuid), KeyError> {
        let destination = self.resolve(destination_key, false)?;
        let decrypted = self
            .decrypt_as(blob, source_context, source_key, "ReEncrypt")
            .await?;
        let blob = self
            .encrypt_with(
                &destination,
                decrypted.plaintext.expose(),
                destination_context,
                "ReEncrypt",
            )
            .await?;
        Ok((blob, decrypted.key_id, destination.record().id))
    }

    /// GenerateDataKey: a random data key, returned in plaintext and encrypted under the key.
    pub async fn generate_data_key(
        &self,
        key: &str,
        size: DataKeySize,
        context: &EncryptionContext,
    ) -> Result<(SecretBytes, Vec<u8>, Uuid), KeyError> {
        let entry = self.resolve(key, false)?;
        let data_key = random_bytes(size.len());
        let blob = self
            .encrypt_with(&entry, data_key.expose(), context, "GenerateDataKey")
            .await?;
        Ok((data_key, blob, entry.record().id))
    }

    /// GenerateRandom: 1–1024 bytes from the OS's CSPRNG.
    pub fn generate_random(&self, number_of_bytes: u32) -> Result<SecretBytes, KeyError> {
        if !(1..=MAX_RANDOM).contains(&number_of_bytes) {
            return Err(KeyError::Validation(format!(
                "NumberOfBytes must be between 1 and {MAX_RANDOM}; got {number_of_bytes}"
            )));
        }
        Ok(random_bytes(number_of_bytes as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_key_sizes() {
        assert_eq!(
            DataKeySize::from_request("AES_256", None).unwrap().len(),
            32
        );
        assert_eq!(
            DataKeySize::from_request("AES_128", None).unwrap().len(),
            16
        );
        assert_eq!(DataKeySize::from_request("", Some(1)).unwrap().len(), 1);
        assert_eq!(
            DataKeySize::from_request("", Some(1024)).unwrap().len(),
            1024
        );
        for (spec, bytes) in [
            ("", None),
            ("", Some(0)),
            ("", Some(1025)),
            ("AES_256", Some(32)),
            ("AES_512", None),
        ] {
            assert!(
                matches!(
                    DataKeySize::from_request(spec, bytes),
                    Err(KeyError::Validation(_))
                ),
                "{spec} {bytes:?}"
            );
        }
    }

    #[test]
    fn alias_names() {
        for good in ["alias/app", "alias/team/app-1_x"] {
            validate_alias_name(good).unwrap();
        }
        for bad in [
            "app",
            "alias/",
            "alias/aws/x",
            "alias/a b",
            "alias/é",
            &format!("alias/{}", "a".repeat(251)),
        ] {
            assert!(validate_alias_name(bad).is_err(), "{bad}");
        }
    }
}
