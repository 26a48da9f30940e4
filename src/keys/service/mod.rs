//! The key service: lifecycle and cryptographic operations over the keystores and the
//! metadata store.
//!
//! Every key is indexed in memory at start-up; the entries of the keys used most recently are
//! held whole, others read from the store on demand (`held.rs`). Changes are written through
//! to the store. Changes to one key are serialised by its gate and become visible to readers
//! only once durable, so no caller ever sees a state that a crash could take back.

use super::model::DEFAULT_PENDING_DAYS;
use super::reference::{arn_prefix, printable};
use super::{
    KeyError, KeyRecord, KeyReference, KeyState, KeyUsage, KeyUse, KeyVersion, RotationSchedule,
    RotationType,
};
use crate::clock::{Clock, DAY, UnixSeconds};
use crate::crypto::{CiphertextBlob, EncryptionContext, NONCE_LEN};
use crate::keystore::{KeySpec, KeyStore, KeyStoreError, MacAlgorithm, MaterialRef};
use crate::policy::{NamedPolicy, Policy, PolicyKind, default_key_policy};
use crate::secret::SecretBytes;
use crate::store::{CommitError, Store, StoreError, WriteBatch};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use uuid::Uuid;

/// Largest plaintext Encrypt accepts.
pub const MAX_PLAINTEXT: usize = 4096;
/// Largest key policy document, in bytes (AWS KMS: 32 KB).
pub const MAX_KEY_POLICY: usize = 32 * 1024;
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
    /// Most aliases the account may hold.
    pub alias_quota: usize,
    /// Most on-demand rotations of one key (AWS KMS allows 25).
    pub on_demand_rotation_quota: u32,
    pub default_keystore: String,
    pub default_rotation_period_days: u32,
    /// A version is rotated once it has done this many encryptions (2^32 by default).
    pub nonce_limit: u64,
    /// Encryption counts are reserved on disk this many at a time.
    pub nonce_reservation_block: u64,
    /// Most grants one key may hold (AWS KMS: 50,000).
    pub grants_per_key: usize,
    /// Most bytes of grant records the account may hold in all.
    pub grant_bytes: usize,
    /// Key entries held in memory (the others are read from the store when asked for).
    pub key_cache: usize,
}

impl KeyServiceConfig {
    pub fn new(account_id: impl Into<String>) -> Self {
        Self {
            partition: "keyhaven".into(),
            region: "local".into(),
            account_id: account_id.into(),
            key_quota: 100_000,
            alias_quota: 50_000,
            on_demand_rotation_quota: 25,
            default_keystore: crate::keystore::SEALED.into(),
            default_rotation_period_days: 365,
            nonce_limit: 1 << 32,
            nonce_reservation_block: 1 << 20,
            grants_per_key: 50_000,
            grant_bytes: 256 << 20,
            key_cache: held::KEY_CACHE,
        }
    }
}

/// Counts encryptions with the key's current version.
#[derive(Debug)]
struct NonceCounter {
    version: u32,
    used: AtomicU64,
    reserved: AtomicU64,
    /// Counts below this are not this daemon's (another sharing the store reserved them).
    floor: AtomicU64,
}

impl NonceCounter {
    fn new(version: &KeyVersion, used: u64) -> Arc<Self> {
        Arc::new(Self {
            version: version.number,
            used: AtomicU64::new(used),
            reserved: AtomicU64::new(version.nonces_reserved),
            floor: AtomicU64::new(0),
        })
    }

    /// Its counts, kept while its key's entry is evicted (nobody holds the counter then: it
    /// is only ever taken from an entry held).
    fn park(&self) -> ParkedCounter {
        ParkedCounter {
            version: self.version,
            used: self.used.load(Ordering::Acquire),
            reserved: self.reserved.load(Ordering::Acquire),
            floor: self.floor.load(Ordering::Acquire),
        }
    }

    fn unpark(parked: ParkedCounter) -> Arc<Self> {
        Arc::new(Self {
            version: parked.version,
            used: AtomicU64::new(parked.used),
            reserved: AtomicU64::new(parked.reserved),
            floor: AtomicU64::new(parked.floor),
        })
    }
}

/// A [`NonceCounter`]'s counts, without its atomics and its allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ParkedCounter {
    version: u32,
    used: u64,
    reserved: u64,
    floor: u64,
}

/// A use of a key seen in memory, written to its record by the scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SeenUse {
    time: UnixSeconds,
    operation: &'static str,
}

impl SeenUse {
    fn key_use(self) -> KeyUse {
        KeyUse {
            time: self.time,
            operation: self.operation.to_owned(),
        }
    }

    /// Whether `record` has this use as its last already.
    fn recorded_in(self, record: &KeyRecord) -> bool {
        record
            .last_used
            .as_ref()
            .is_some_and(|u| u.time == self.time && u.operation == self.operation)
    }
}

struct KeyEntry {
    id: Uuid,
    /// Serialises changes to this key, across the wait for the disk.
    gate: tokio::sync::Mutex<()>,
    /// The record, and the store revision it is current at (0 on a store of one daemon):
    /// a record is replaced only by one at least as new.
    record: RwLock<(Arc<KeyRecord>, i64)>,
    nonces: RwLock<Option<Arc<NonceCounter>>>,
    /// The parsed key policy, with the record it was parsed from.
    policy: std::sync::Mutex<Option<(Arc<KeyRecord>, Arc<Policy>)>>,
    /// The latest use, kept in memory and written to the record by the scheduler.
    last_use: std::sync::Mutex<Option<SeenUse>>,
}

impl KeyEntry {
    fn new(record: KeyRecord, fresh: bool, revision: i64) -> Self {
        Self::with_parked(record, fresh, revision, held::Parked::default())
    }

    /// The entry of a record read from the store, given what the key's entry left when it
    /// was last evicted: its counter (used if it counts the current version), its last use.
    fn with_parked(record: KeyRecord, fresh: bool, revision: i64, parked: held::Parked) -> Self {
        // After a restart every reserved count is taken as used (counts never go backwards),
        // but those a clean stop kept as unused.
        let nonces = record.versions.last().map(|v| match parked.counter {
            Some(counter) if counter.version == v.number => NonceCounter::unpark(counter),
            _ => {
                let unused = match parked.unused {
                    Some((version, unused)) if version == v.number as u16 => u64::from(unused),
                    _ => 0,
                };
                let used = if fresh {
                    0
                } else {
                    v.nonces_reserved.saturating_sub(unused)
                };
                NonceCounter::new(v, used)
            }
        });
        Self {
            id: record.id,
            gate: tokio::sync::Mutex::new(()),
            record: RwLock::new((Arc::new(record), revision)),
            nonces: RwLock::new(nonces),
            policy: std::sync::Mutex::new(None),
            last_use: std::sync::Mutex::new(parked.used),
        }
    }

    /// The latest use seen in memory, written or not.
    fn seen_use(&self) -> Option<SeenUse> {
        self.last_use.lock().ok().and_then(|u| *u)
    }

    /// The latest use seen in memory, if its record does not have it yet.
    fn unwritten_use(&self) -> Option<SeenUse> {
        self.seen_use().filter(|u| !u.recorded_in(&self.record()))
    }

    fn record(&self) -> Arc<KeyRecord> {
        match self.record.read() {
            Ok(record) => record.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Installs `record`, current at `revision`, unless the entry holds a newer one already
    /// (another daemon's change heard meanwhile). Returns whether it did.
    fn set_record(&self, record: Arc<KeyRecord>, revision: i64) -> bool {
        let mut slot = match self.record.write() {
            Ok(slot) => slot,
            Err(poisoned) => poisoned.into_inner(),
        };
        if revision < slot.1 {
            return false;
        }
        *slot = (record, revision);
        true
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
    /// The index of every key, and the entries of those used most recently.
    held: held::Held,
    aliases: RwLock<BTreeMap<String, AliasEntry>>,
    /// The default key policy, parsed once and shared by every key that has no other.
    default_policy: Option<Arc<Policy>>,
    /// Serialises alias changes (and alias removal when a key is destroyed).
    alias_gate: tokio::sync::Mutex<()>,
    /// Keys in any state but Deleted, for the quota.
    live_keys: AtomicUsize,
    /// Keys whose material the start-up check (or a later one) did not find in the keystore.
    unavailable: RwLock<HashSet<Uuid>>,
    /// Where the start-up check of every key's material is: it runs while the daemon serves.
    material_check: tokio::sync::watch::Sender<startup::MaterialCheck>,
    /// Set at shutdown: the material check stops at its next page.
    stop_checking: std::sync::atomic::AtomicBool,
    /// Attempts to use keys pending deletion (operators alert on this before material is gone).
    pending_deletion_uses: AtomicU64,
    /// Orphaned material per keystore, as last counted (start-up, or a listing).
    orphan_counts: RwLock<BTreeMap<String, i64>>,
    /// Every key's grants.
    grants: RwLock<grants::GrantTable>,
    /// Serialises grant changes (so that the quotas hold under concurrent CreateGrant).
    grant_gate: tokio::sync::Mutex<()>,
    /// Whether a change to a key record may have been applied without the index hearing of
    /// it: the index is then not kept at shutdown (see [`KeyService::keep_index`]).
    index_drifted: std::sync::atomic::AtomicBool,
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
    if !matches!(
        error,
        KeyStoreError::DecryptFailed
            | KeyStoreError::Unsupported(_)
            | KeyStoreError::IncorrectMaterial(_)
    ) && let Some(m) = crate::metrics::metrics()
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
        KeyStoreError::Unsupported(message) => KeyError::UnsupportedOperation(message),
        KeyStoreError::IncorrectMaterial(message) => KeyError::IncorrectKeyMaterial(message),
        other => KeyError::Internal(format!("keystore {store}: {other}")),
    }
}

/// The answer of a keystore call begun at `started`: its time observed, its error mapped.
fn keystore_answer<T>(
    keystore: &str,
    operation: &str,
    started: Instant,
    answer: Result<T, KeyStoreError>,
) -> Result<T, KeyError> {
    if let Some(m) = crate::metrics::metrics() {
        m.keystore_seconds
            .with_label_values(&[keystore, operation])
            .observe(started.elapsed().as_secs_f64());
    }
    answer.map_err(|e| keystore_error(keystore, e))
}

/// A keystore call made on the calling thread (the keystore does not block): it may borrow
/// what a call on another thread would have to copy (a plaintext, a ciphertext).
fn in_place<T>(
    keystore: &dyn KeyStore,
    operation: &'static str,
    call: impl FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError>,
) -> Result<T, KeyError> {
    let started = Instant::now();
    keystore_answer(keystore.name(), operation, started, call(keystore))
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

/// Refuses a key policy past [`MAX_KEY_POLICY`] as a quota (`LimitExceededException`), before
/// it is parsed or stored.
pub fn validate_key_policy_size(text: &str) -> Result<(), KeyError> {
    if text.len() > MAX_KEY_POLICY {
        return Err(KeyError::LimitExceeded(format!(
            "a key policy is at most {MAX_KEY_POLICY} bytes; this one is {}",
            text.len()
        )));
    }
    Ok(())
}

/// Alias names: `alias/` and 1 to 250 of `A-Z a-z 0-9 / _ -`, not under the reserved `alias/aws/`.
pub fn validate_alias_name(name: &str) -> Result<(), KeyError> {
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
        let (index, live) = Self::index_at_open(&store, &keystores)?;
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
        let grants = grants::GrantTable::load(&store)?;
        let default_policy = Policy::parse(
            &default_key_policy(&config.partition, &config.account_id),
            PolicyKind::Resource,
        )
        .ok()
        .map(Arc::new);
        let held = held::Held::new(index, config.key_cache, store.is_shared());
        Ok(Self {
            arn_prefix: arn_prefix(&config.partition, &config.region, &config.account_id),
            default_policy,
            config,
            clock,
            store,
            keystores,
            held,
            aliases: RwLock::new(aliases),
            alias_gate: tokio::sync::Mutex::new(()),
            live_keys: AtomicUsize::new(live),
            unavailable: RwLock::new(HashSet::new()),
            material_check: tokio::sync::watch::Sender::new(startup::MaterialCheck::NotStarted),
            stop_checking: std::sync::atomic::AtomicBool::new(false),
            pending_deletion_uses: AtomicU64::new(0),
            orphan_counts: RwLock::new(BTreeMap::new()),
            grants: RwLock::new(grants),
            grant_gate: tokio::sync::Mutex::new(()),
            index_drifted: std::sync::atomic::AtomicBool::new(false),
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

    /// How many keys (tombstones included) the service holds.
    pub fn count(&self) -> usize {
        self.held.len()
    }

    /// Whether the key `id` is this service's (in any state).
    pub fn holds_key(&self, id: Uuid) -> bool {
        self.held.summary(id).is_some()
    }

    /// Whether the key `id` exists and is not a tombstone.
    fn key_is_live(&self, id: Uuid) -> bool {
        self.held.summary(id).is_some_and(|s| s.live())
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
        // A tombstone is not read from the store only to be refused.
        if !include_deleted && self.held.summary(id).is_some_and(|s| !s.live()) {
            return Err(Self::not_found(key));
        }
        let entry = self.entry_by_id(id)?.ok_or_else(|| Self::not_found(key))?;
        if !include_deleted && entry.record().state == KeyState::Deleted {
            return Err(Self::not_found(key));
        }
        Ok(entry)
    }

    /// Waits, on a store other daemons write, until this daemon's view has caught up with the
    /// store (one quorum read, then the change feed), when `key` (any key form) names a key or
    /// an alias this daemon has not heard of: one another daemon has just made is then found
    /// here too, before the reference is judged. A reference still unknown after is left to
    /// the call to refuse; on a store no other daemon writes this does nothing. Returns
    /// whether it caught up. `asked`: when the call came (see [`Self::hear_of`]).
    pub async fn hear_of_key(&self, asked: Instant, key: &str) -> bool {
        self.hear_of(asked, |keys| keys.knows(key)).await
    }

    /// Waits, on a store other daemons write, until this daemon's view has caught up with the
    /// store, when `known` says it has not heard of what a call names (a grant, a grant
    /// token): what another daemon made before the call is then found here too. A catch-up
    /// that fails (etcd out of reach) leaves the call to be judged on the view as it is:
    /// authorised and refused as it would have been (a daemon whose view may be out of date
    /// refuses every call on its own). Returns whether it caught up.
    ///
    /// `asked` is when the call came: every catch-up of one call after its first is served by
    /// the first's read (a call naming several unknown things costs one quorum read).
    pub async fn hear_of(&self, asked: Instant, known: impl FnOnce(&Self) -> bool) -> bool {
        self.store.is_shared() && !known(self) && self.store.catch_up_after_a_miss(asked).await
    }

    /// Whether `key` names a key or alias this daemon holds (in any state), or could never
    /// name one (no key form, another account): nothing to wait for.
    pub fn knows(&self, key: &str) -> bool {
        match KeyReference::parse(key, &self.arn_prefix) {
            Ok(KeyReference::Id(id)) => self.holds_key(id),
            Ok(KeyReference::Alias(alias)) => self
                .aliases
                .read()
                .map_or(true, |aliases| aliases.contains_key(&alias)),
            Err(_) => true,
        }
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

    /// The key's policy, parsed (cached until the record changes). A stored policy that does
    /// not parse, or a key that is gone (or cannot be read), gives [`Policy::deny_all`]:
    /// access fails closed and never falls back to identity policies alone.
    pub fn key_policy(&self, id: Uuid) -> NamedPolicy {
        let named = |policy| NamedPolicy {
            name: "key policy".into(),
            policy,
        };
        let entry = match self.entry_by_id(id) {
            Ok(Some(entry)) => entry,
            Ok(None) => return named(Arc::new(Policy::deny_all(PolicyKind::Resource))),
            Err(error) => {
                tracing::error!(key = %id, ?error, "the key's record cannot be read; its policy denies");
                return named(Arc::new(Policy::deny_all(PolicyKind::Resource)));
            }
        };
        let record = entry.record();
        let mut cache = match entry.policy.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some((cached_for, policy)) = cache.as_ref()
            && Arc::ptr_eq(cached_for, &record)
        {
            return named(policy.clone());
        }
        let parsed = match &record.policy {
            Some(text) => Policy::parse_stored(text, PolicyKind::Resource).map(Arc::new),
            None => self.default_policy.clone().ok_or_else(|| {
                crate::policy::MalformedPolicy("the default key policy does not parse".into())
            }),
        };
        let policy = parsed.unwrap_or_else(|e| {
            tracing::error!(key = %id, error = %e,
                "the key's stored policy cannot be read; every request on the key is denied");
            Arc::new(Policy::deny_all(PolicyKind::Resource))
        });
        *cache = Some((record, policy.clone()));
        named(policy)
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
        validate_key_policy_size(&text)?;
        Policy::parse(&text, PolicyKind::Resource).map_err(|e| KeyError::MalformedPolicy(e.0))?;
        let entry = self.resolve(key, false)?;
        self.change_key(&entry, |record| {
            record.require_active("PutKeyPolicy")?;
            record.policy = Some(text.clone());
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
        let started = Instant::now();
        let answer = if let Some(bounded) = keystore.deadline() {
            bounded.run(operation, generates, call).await
        } else if keystore.blocks() {
            let keystore = keystore.clone();
            tokio::task::spawn_blocking(move || call(&*keystore))
                .await
                .map_err(|e| KeyError::Internal(format!("keystore task: {e}")))?
        } else {
            return in_place(&**keystore, operation, call);
        };
        keystore_answer(keystore.name(), operation, started, answer)
    }

    /// As [`KeyService::on_keystore`], for a call that takes long even where the keystore does
    /// not block (RSA key generation and signing in the sealed store): it then runs on a
    /// blocking thread, not on the thread that serves requests.
    async fn on_keystore_heavy<T, F>(
        &self,
        keystore: &Arc<dyn KeyStore>,
        operation: &'static str,
        generates: Option<MaterialRef>,
        heavy: bool,
        call: F,
    ) -> Result<T, KeyError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn KeyStore) -> Result<T, KeyStoreError> + Send + 'static,
    {
        if heavy && let Some(bounded) = keystore.deadline() {
            // A device's RSA key pair: a longer deadline than other device calls.
            let started = Instant::now();
            let answer = bounded.run_slow(operation, generates, call).await;
            return keystore_answer(keystore.name(), operation, started, answer);
        }
        if !heavy || keystore.blocks() || keystore.deadline().is_some() {
            return self.on_keystore(keystore, operation, generates, call).await;
        }
        let started = Instant::now();
        let owned = keystore.clone();
        let answer = tokio::task::spawn_blocking(move || call(&*owned))
            .await
            .map_err(|e| KeyError::Internal(format!("keystore task: {e}")))?;
        keystore_answer(keystore.name(), operation, started, answer)
    }

    /// Holds a key this daemon just created, unless another daemon's change to it was heard
    /// first (its entry, newer, is kept). Returns the record held.
    fn insert_created(&self, entry: KeyEntry) -> Result<Arc<KeyRecord>, KeyError> {
        Ok(self.held.insert_created(entry).record())
    }

    /// Keeps the index's summary of a key up to date with its record.
    fn summarise(&self, record: &KeyRecord) {
        self.held
            .set_summary(record.id, Some(index::Summary::of(record)));
    }

    /// Applies `change` to a copy of the key's record and commits it (with `extra` records);
    /// readers see the new record only once it is durable. On a store other daemons share,
    /// the record must not have changed elsewhere meanwhile: if it did, `change` is made
    /// again on the record as it is now.
    async fn change_key<F>(&self, entry: &KeyEntry, change: F) -> Result<Arc<KeyRecord>, KeyError>
    where
        F: FnMut(&mut KeyRecord) -> Result<WriteBatch, KeyError>,
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
        F: FnMut(&mut KeyRecord) -> Result<WriteBatch, KeyError>,
    {
        self.try_change_key_locked(entry, change)
            .await
            .map_err(|failed| failed.error)
    }

    /// [`KeyService::change_key_locked`], saying on failure whether the batch was applied
    /// (see [`CommitError`]): material generated for it must then be kept.
    async fn try_change_key_locked<F>(
        &self,
        entry: &KeyEntry,
        mut change: F,
    ) -> Result<Arc<KeyRecord>, FailedChange>
    where
        F: FnMut(&mut KeyRecord) -> Result<WriteBatch, KeyError>,
    {
        let mut tries = 0;
        loop {
            // The view first: the record read after it is at least as new.
            let view = self.store.view();
            let mut record = (*entry.record()).clone();
            let mut batch = change(&mut record).map_err(FailedChange::not_applied)?;
            let name = key_record_name(record.id);
            batch.put(
                name.clone(),
                records::stored_record(&record).map_err(FailedChange::not_applied)?,
            );
            batch.require_present_unchanged(name, view);
            let change = self.index_change();
            let committed = self.store.try_commit_at(batch).await;
            // Counted whatever the outcome (a failed batch may have been applied), while this
            // call still holds the entry: see `held.rs`.
            self.held.changed(entry.id);
            match committed {
                Ok(revision) => {
                    let record = Arc::new(record);
                    if entry.set_record(record.clone(), revision) {
                        self.summarise(&record);
                    }
                    change.settled();
                    return Ok(record);
                }
                Err(CommitError::Stale) if tries < MAX_STALE_TRIES => {
                    // Made again on the record as the store holds it now.
                    change.settled();
                    tries += 1;
                    self.store
                        .catch_up()
                        .await
                        .map_err(|e| FailedChange::not_applied(e.into()))?;
                }
                Err(error) => {
                    if !error.applied() {
                        change.settled();
                    }
                    return Err(error.into());
                }
            }
        }
    }
}

/// Times a change is made again because another daemon changed its key meanwhile.
const MAX_STALE_TRIES: u32 = 16;
/// Times a key's record is read again because a change to it was counted meanwhile.
const MAX_READ_TRIES: u32 = 64;

/// A change to the store that failed, and whether its batch was applied: an applied batch may
/// still reach disk, so whatever it names (a device object) must be kept.
#[derive(Debug)]
pub(super) struct FailedChange {
    pub error: KeyError,
    pub applied: bool,
}

impl FailedChange {
    fn not_applied(error: KeyError) -> Self {
        Self {
            error,
            applied: false,
        }
    }
}

impl From<CommitError> for FailedChange {
    fn from(error: CommitError) -> Self {
        Self {
            applied: error.applied(),
            error: match error {
                CommitError::Stale => KeyError::Contended(
                    "another daemon changed the key at the same time; try again".into(),
                ),
                CommitError::Unavailable(detail) => {
                    tracing::warn!(%detail, "the store did not take a change after its retries");
                    KeyError::StoreUnavailable
                }
                other => StoreError::from(other).into(),
            },
        }
    }
}

mod aliases;
mod asymmetric;
mod batch;
mod crypto;
mod follow;
mod grants;
mod held;
mod index;
pub use held::KEY_CACHE;
mod import;
mod journal;
mod kept;
mod lifecycle;
mod mac;
mod records;
mod rotation;
mod sign;
mod startup;
mod tags;
#[cfg(test)]
mod test_device;
mod usage;

pub use asymmetric::{
    DataKeyPair, encryption_algorithm, encryption_algorithms, key_agreement_algorithm,
    key_pair_spec,
};
pub use batch::EncryptItem;
pub use grants::{Grant, MAX_GRANT_RECORD, NewGrant, validate_new_grant};
pub use import::{IMPORT_PARAMETERS_VALIDITY, ImportParameters, MaterialOrigin, material_expiry};
pub use journal::{Orphan, PendingGeneration, Reconciliation};
pub use mac::{MAX_MAC_MESSAGE, MacAnswer, mac_algorithm};
pub use sign::{MAX_SIGN_MESSAGE, MessageType, PublicKey, Signed, signing_algorithm};
