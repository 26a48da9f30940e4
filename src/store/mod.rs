//! Durable metadata: an ordered key-value store behind [`StoreBackend`]: sled on one machine
//! (the default), or etcd (`store = "etcd"`, see `etcd_backend`; built with the `etcd` feature).
//!
//! Every state change goes through [`Store::commit`]: the batch is applied atomically, then the
//! call waits until it is on disk. Concurrent commits share one flush (group commit): a single
//! flusher thread takes every commit that arrived while the previous flush ran and makes them
//! durable together, so N concurrent CreateKeys cost about one `flush` + `fsync`, not N. When
//! a flush was shared, the next one waits up to 0.8 ms for as many callers to gather again; a
//! lone caller never waits. On a store no other daemon writes, the flusher also applies the
//! gathered commits' batches as one: sled writes every batch to its log as two writes (it
//! rolls its buffer before and after the batch's manifest), which were most of a CreateKey's
//! cost under load. A merged batch that fails is tried again batch by batch, so each commit
//! is answered for itself.
//!
//! A record that only has to reach disk with the next change (a request's signature, kept
//! against its replay after a restart) may be staged ([`Store::stage`]) on a store no other
//! daemon writes: the next batch carries it, and [`Store::durable`], [`Store::settle`] and
//! closing apply whatever is still staged.
//!
//! Every record passes the [`Barrier`] on its way in and out: it is authenticated under a key
//! derived from the master key, bound to its name, and the set of records is authenticated as a
//! whole, so an offline edit of the data directory is refused at load (see `barrier`).

mod aside;
pub mod barrier;
pub mod compact;
#[cfg(feature = "etcd")]
mod etcd_backend;
mod local;
mod passes;
pub mod shared;
mod sled_backend;

pub use barrier::{Barrier, IntegrityError};
#[cfg(feature = "etcd")]
pub use etcd_backend::{
    DEFAULT_PREFIX as DEFAULT_ETCD_PREFIX, EtcdBackend, EtcdSettings, EtcdTls, HOLD_TTL_SECONDS,
};
use local::{Local, Request, run_flusher};
use passes::{CHECK_PAGE, check_every_record, every_record};
pub use passes::{copy_records, read_ahead};
pub use shared::SharedEngine;
pub use shared::{Changed, Listener};
use shared::{Fenced, Follow, View};
pub use sled_backend::SledBackend;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A storage failure. The message is for the daemon's log; callers get a generic error.
#[derive(Debug, Clone, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct StoreError(pub String);

/// Why [`Store::try_commit`] failed, and so whether the batch may still reach disk.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The batch was not applied: none of it is in the store, or ever will be.
    #[error(transparent)]
    NotApplied(StoreError),
    /// The batch was applied but the flush after it failed: it is in the store, and may reach
    /// disk with a later flush (sled also flushes in the background) or be lost in a crash.
    /// Whatever the batch names must be kept as if it had been committed.
    #[error(transparent)]
    DurabilityUnknown(StoreError),
    /// The batch was not applied: a record it required unchanged
    /// ([`WriteBatch::require_unchanged`]) was changed by another daemon after the caller's view.
    /// Wait for the view to catch up ([`Store::catch_up`]) and make the change again.
    #[error("a record changed on another daemon; nothing was written")]
    Stale,
    /// The engine did not take the batch, tried again until its retries ran out (a cluster
    /// without a leader, say): nothing was applied, and the same change may be made again
    /// later.
    #[error(transparent)]
    Unavailable(StoreError),
}

impl CommitError {
    /// Whether the batch was applied (and may be, or become, durable).
    pub fn applied(&self) -> bool {
        matches!(self, CommitError::DurabilityUnknown(_))
    }
}

impl From<CommitError> for StoreError {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::NotApplied(e)
            | CommitError::DurabilityUnknown(e)
            | CommitError::Unavailable(e) => e,
            CommitError::Stale => StoreError(CommitError::Stale.to_string()),
        }
    }
}

/// A stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One change: a value put, or (`None`) a record removed.
pub type Op = (Vec<u8>, Option<Vec<u8>>);
/// Something kept alive until a batch is applied or dropped.
pub type Guard = Arc<dyn Send + Sync>;

/// Changes applied together or not at all.
#[derive(Default, Clone)]
pub struct WriteBatch {
    ops: Vec<Op>,
    /// Dropped once the batch is applied, or abandoned: whoever made records for it can wait
    /// until they are in the store or never will be.
    guards: Vec<Guard>,
    /// Records that must not have changed after a view, each with its view and whether the
    /// caller read it as present (on a shared store).
    unchanged: Vec<(Vec<u8>, i64, bool)>,
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch")
            .field("ops", &self.ops.len())
            .field("guards", &self.guards.len())
            .field("unchanged", &self.unchanged.len())
            .finish()
    }
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    pub fn delete(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
        self.guards.extend(other.guards);
        self.unchanged.extend(other.unchanged);
    }

    /// Applies the batch only if no other daemon changed `name` after the view `since` (read
    /// with [`Store::view`] before the record was): otherwise the commit fails as
    /// [`CommitError::Stale`]. Nothing to check on a store no other daemon writes.
    pub fn require_unchanged(&mut self, name: impl Into<Vec<u8>>, since: i64) {
        self.unchanged.push((name.into(), since, false));
    }

    /// [`WriteBatch::require_unchanged`] for a record the caller read as present: also
    /// refused when another daemon removed it since (a removed record has no revision to
    /// compare).
    pub fn require_present_unchanged(&mut self, name: impl Into<Vec<u8>>, since: i64) {
        self.unchanged.push((name.into(), since, true));
    }

    /// Keeps `guard` alive until the batch is applied or dropped.
    pub fn hold(&mut self, guard: Guard) {
        self.guards.push(guard);
    }

    pub(crate) fn hold_all(&mut self, guards: Vec<Guard>) {
        self.guards.extend(guards);
    }

    pub(crate) fn into_parts(self) -> (Vec<Op>, Vec<Guard>) {
        (self.ops, self.guards)
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn into_ops(self) -> Vec<Op> {
        self.ops
    }

    /// The batch with every name it writes or requires unchanged under `scope`.
    fn within(mut self, scope: &[u8]) -> WriteBatch {
        if scope.is_empty() {
            return self;
        }
        let scoped = |name: &mut Vec<u8>| {
            name.splice(0..0, scope.iter().copied());
        };
        self.ops.iter_mut().for_each(|(name, _)| scoped(name));
        self.unchanged
            .iter_mut()
            .for_each(|(name, _, _)| scoped(name));
        self
    }
}

/// An ordered key-value engine. Implementations must make `apply` atomic and `sync` a real
/// barrier: after it returns, everything applied before it survives a crash or power loss.
pub trait StoreBackend: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` entries whose key starts with `prefix`, in key order, strictly after
    /// `after` when given.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError>;

    fn sync(&self) -> Result<(), StoreError>;

    /// The most changes one `apply` can hold (a network engine bounds its transactions).
    fn max_batch_ops(&self) -> usize {
        usize::MAX
    }

    /// The engine as other processes share it (etcd), when they may write it too.
    fn shared(&self) -> Option<&dyn SharedEngine> {
        None
    }

    /// Keeps `bytes` beside the records under `name`, replacing what was there, on disk
    /// before it returns: state derived from the records that a start may read instead of
    /// every record (see [`Store::put_aside`]). An engine without a place for it keeps
    /// nothing.
    fn put_aside(&self, _name: &str, _bytes: &[u8]) -> Result<(), StoreError> {
        Ok(())
    }

    /// What [`StoreBackend::put_aside`] last kept under `name`.
    fn aside(&self, _name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
}

type Waiter = oneshot::Sender<Result<(), StoreError>>;

/// The metadata store the daemon uses: a backend behind the barrier, plus the group-commit
/// flusher.
pub struct Store {
    /// The engine, the barrier and the digest: what applying a batch here takes.
    local: Local,
    /// On a shared store: the follower of other daemons' changes (see `shared`).
    follow: Option<Arc<Follow>>,
    /// On a shared store: this daemon's batches go out one at a time (each is fenced on the
    /// view, so two at once would only refuse each other), without holding the view.
    sending: Arc<Mutex<()>>,
    flush_requests: Arc<Mutex<Option<mpsc::Sender<Request>>>>,
    flusher: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// What every name this handle reads and writes starts with (empty for the whole store;
    /// see [`Store::scoped`]).
    scope: Vec<u8>,
}

/// Why one try at applying a batch did not.
enum Attempt {
    Failed(StoreError),
    /// The view is behind the store's digest, which is at this revision now.
    Behind(i64),
    /// The engine did not take the batch, and nothing else changed: it may be tried again.
    Retry(StoreError),
    /// The batch may have been applied, or not (its answer was lost).
    Unknown(StoreError),
    Stale,
}

impl Attempt {
    fn into_error(self) -> StoreError {
        match self {
            Attempt::Failed(error) | Attempt::Retry(error) | Attempt::Unknown(error) => error,
            Attempt::Behind(revision) => StoreError(format!(
                "the store kept moving past this daemon's view (revision {revision}): too many \
                 daemons writing at once?"
            )),
            Attempt::Stale => CommitError::Stale.into(),
        }
    }
}

/// Catch-ups one batch waits for before it fails (other daemons writing all the while).
const MAX_TRIES: u32 = 64;
/// Tries of a batch the engine did not take (a member down, an election under way).
const MAX_RETRIES: u32 = 8;

/// The pause before try `n` + 1 of a batch the engine did not take: 40 ms before the second
/// try, doubling (about 5 s over the [`MAX_RETRIES`] tries, long enough for an election with
/// etcd's default timeouts).
fn retry_pause(n: u32) -> Duration {
    Duration::from_millis(20u64 << n.min(7))
}

impl From<StoreError> for Attempt {
    fn from(error: StoreError) -> Self {
        Attempt::Failed(error)
    }
}

/// When a store no other daemon writes has its records checked at open (`store_check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreCheck {
    /// Every record and the digest of them all, before the open returns: an edited store is
    /// refused at start.
    #[default]
    AtStart,
    /// Against the tree kept at the last close, when there is one: each record as a call
    /// reads it, and every record by a pass beside serving (see `aside`). The start reads no
    /// record; an edited record is refused when read, and the store from then on.
    BesideServing,
}

impl std::str::FromStr for StoreCheck {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "at-start" => Ok(StoreCheck::AtStart),
            "beside-serving" => Ok(StoreCheck::BesideServing),
            other => Err(format!(
                "store_check must be \"at-start\" or \"beside-serving\", not {other:?}"
            )),
        }
    }
}

impl Store {
    /// Opens the store behind `barrier`, after checking every record and the digest of them
    /// all: a store edited offline is refused here, naming the record where it can. After a
    /// close that kept the tree, the records are checked against it instead, as they are read
    /// and by a pass beside serving (see `aside`).
    pub fn open(backend: Arc<dyn StoreBackend>, barrier: Barrier) -> Result<Self, StoreError> {
        Self::open_with(backend, barrier, StoreCheck::AtStart)
    }

    /// [`Store::open`], checking the records as `check` says.
    pub fn open_with(
        backend: Arc<dyn StoreBackend>,
        barrier: Barrier,
        check: StoreCheck,
    ) -> Result<Self, StoreError> {
        // A store with records and no digest at all is one from before authentication (or
        // one whose digest was removed): said as such, before any record is checked.
        if backend.get(barrier::DIGEST_RECORD)?.is_none() && !backend.scan(&[], None, 1)?.is_empty()
        {
            return Err(IntegrityError::NoDigest.into());
        }
        let Some(shared) = backend.shared() else {
            // The tree kept at the last close, when it is the tree of the records as stored:
            // the records are then checked against it as they are read, and by a pass beside
            // serving (see `aside`).
            let reading = Instant::now();
            if check == StoreCheck::BesideServing
                && let Some(tree) = aside::read_tree(&barrier, &*backend)
            {
                tracing::info!(
                    read_ms = reading.elapsed().as_millis() as u64,
                    "the store's tree was read back: its records are checked beside serving"
                );
                let store = Self::with(backend, Some(barrier), tree);
                store.check_in_background()?;
                return Ok(store);
            }
            let digest = check_every_record(&barrier, &*backend)?;
            let store = Self::with(backend, Some(barrier), digest);
            store.move_digest_format()?;
            return Ok(store);
        };
        // Other daemons write while this one reads: every record at one revision, and the
        // feed of changes from the next.
        let snapshot = shared.snapshot()?;
        let tree = barrier.check_all(snapshot.entries.into_iter().map(Ok))?;
        let (sink, events) = mpsc::channel();
        shared.follow(snapshot.revision, sink)?;
        let mut store = Self::with(backend.clone(), Some(barrier), tree);
        let follow = Follow::new(snapshot.fence);
        if let Ok(mut view) = store.local.digest.lock() {
            view.revision = snapshot.fence;
        }
        let engine = Arc::downgrade(&backend);
        let (barrier, view, following) = (
            store
                .local
                .barrier
                .clone()
                .ok_or_else(|| StoreError("no barrier".into()))?,
            store.local.digest.clone(),
            follow.clone(),
        );
        std::thread::Builder::new()
            .name("keyhaven-follow".into())
            .spawn(move || shared::run(engine, barrier, view, following, events))
            .map_err(|e| StoreError(format!("cannot start the store's follower: {e}")))?;
        let (engine, following) = (Arc::downgrade(&backend), follow.clone());
        std::thread::Builder::new()
            .name("keyhaven-fresh".into())
            .spawn(move || shared::watch_freshness(engine, following))
            .map_err(|e| StoreError(format!("cannot start the store's freshness check: {e}")))?;
        store.follow = Some(follow);
        store.move_digest_format()?;
        Ok(store)
    }

    /// Stores the digest again in this version's format when an earlier version wrote it (see
    /// `barrier`): once its records have passed their check, before anything else is written.
    fn move_digest_format(&self) -> Result<(), StoreError> {
        let Some(barrier) = self.local.barrier.as_deref() else {
            return Ok(());
        };
        let Some(stored) = self.local.backend.get(barrier::DIGEST_RECORD)? else {
            return Ok(());
        };
        if barrier.earlier_format(&stored) {
            tracing::info!(
                "the store's digest was in an earlier version's format: stored again in this one's"
            );
            self.commit_blocking(WriteBatch::new())?;
        }
        Ok(())
    }

    /// The revision this daemon's view of a shared store is current at (0 on a store no other
    /// daemon writes): read it before reading what a batch will require unchanged.
    pub fn view(&self) -> i64 {
        self.follow.as_ref().map_or(0, |f| f.view())
    }

    /// Why this daemon's view of a shared store may be out of date (its change feed is broken,
    /// or a change failed its checks): while it is, nothing should be served from caches.
    pub fn out_of_date(&self) -> Option<String> {
        self.follow.as_ref().and_then(|f| f.problem())
    }

    /// The engine other daemons share, when they do.
    pub fn shared_engine(&self) -> Option<&dyn SharedEngine> {
        self.local.backend.shared()
    }

    /// Whether the daemon `id` leads `role` (taking the lead when nobody has it); on a store
    /// no other daemon writes, it always does.
    pub fn lead(&self, role: &str, id: &str) -> Result<bool, StoreError> {
        match self.local.backend.shared() {
            Some(shared) => Ok(shared.leader(role, Some(id))?.as_deref() == Some(id)),
            None => Ok(true),
        }
    }

    /// Whether other daemons write this store too.
    pub fn is_shared(&self) -> bool {
        self.follow.is_some()
    }

    /// Hears every change another daemon makes, before the view moves past it (and at once,
    /// what changed since the store was opened).
    pub fn listen(&self, listener: Listener) {
        if let Some(follow) = &self.follow {
            follow.listen(listener);
        }
    }

    /// [`Store::catch_up_since`] for a caller that found no trace of what it was asked about
    /// (a key, a grant, an access key another daemon may have just made), on a store other
    /// daemons write. A failure is logged, not returned: the caller then judges on the view as
    /// it is (a daemon whose view may be out of date refuses every call on its own). Whether
    /// it caught up; false at once on a store no other daemon writes.
    pub async fn catch_up_after_a_miss(&self, since: Instant) -> bool {
        if self.follow.is_none() {
            return false;
        }
        match self.catch_up_since(since).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot catch up with the shared store");
                false
            }
        }
    }

    /// Waits until the view has caught up with everything the store holds now (after a
    /// [`CommitError::Stale`]).
    pub async fn catch_up(&self) -> Result<(), StoreError> {
        self.catch_up_since(Instant::now()).await
    }

    /// Waits until the view has caught up with everything the store held at `since`: a call
    /// passes the instant it came, so that all its catch-ups cost one quorum read (the first
    /// one's answer serves the later ones), and a read another call began after it serves it
    /// too.
    pub async fn catch_up_since(&self, since: Instant) -> Result<(), StoreError> {
        let Some(follow) = &self.follow else {
            return Ok(());
        };
        // The quorum read waits on etcd (and retries while it is out of reach): on a thread of
        // the blocking pool, not one that serves calls.
        let backend = self.local.backend.clone();
        let read = async move {
            tokio::task::spawn_blocking(move || {
                backend
                    .shared()
                    .ok_or_else(|| StoreError("not a shared store".into()))?
                    .fence()
            })
            .await
            .map_err(|e| StoreError(format!("reading the store's revision failed: {e}")))?
        };
        let fence = follow.fresh_fence(since, read).await?;
        follow.caught_up(fence).await
    }

    /// How many quorum reads this daemon's catch-ups have made (0 on a store no other daemon
    /// writes).
    pub fn catch_up_reads(&self) -> u64 {
        self.follow.as_ref().map_or(0, |f| f.catch_up_reads())
    }

    /// Authenticates, once, a store written before records were (`keyhaven store
    /// authenticate`): every record is taken as it is now. Returns how many there were.
    pub fn adopt(backend: &dyn StoreBackend, barrier: &Barrier) -> Result<usize, StoreError> {
        let records = every_record(backend).collect::<Result<Vec<_>, _>>()?;
        let count = records.len();
        backend.apply(barrier.adopt(records)?)?;
        backend.sync()?;
        Ok(count)
    }

    /// A store for offline reading without the master key: records are read without their
    /// tags being checked, and nothing may be written.
    pub fn unchecked_reader(backend: Arc<dyn StoreBackend>) -> Self {
        Self::with(backend, None, barrier::SetDigest::default())
    }

    fn with(
        backend: Arc<dyn StoreBackend>,
        barrier: Option<Barrier>,
        digest: barrier::SetDigest,
    ) -> Self {
        let local = Local {
            backend,
            barrier: barrier.map(Arc::new),
            digest: Arc::new(Mutex::new(View {
                tree: digest,
                revision: 0,
            })),
            digest_uncertain: Arc::new(AtomicBool::new(false)),
            staged: Arc::new(Mutex::new(WriteBatch::new())),
            refused: Arc::default(),
            checking: Arc::default(),
            tree_unchecked: Arc::default(),
            kept: Arc::default(),
        };
        let (sender, receiver) = mpsc::channel::<Request>();
        let flushing = local.clone();
        let flusher = std::thread::Builder::new()
            .name("keyhaven-flush".into())
            .spawn(move || run_flusher(flushing, receiver))
            .ok();
        Self {
            local,
            follow: None,
            sending: Arc::new(Mutex::new(())),
            flush_requests: Arc::new(Mutex::new(Some(sender))),
            flusher: Arc::new(Mutex::new(flusher)),
            scope: Vec::new(),
        }
    }

    /// The value of a stored record (its tag checked, unless this is an unchecked reader),
    /// in the buffer the backend returned: no second copy per read.
    fn value(&self, name: &[u8], mut stored: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let header = match &self.local.barrier {
            Some(barrier) => stored.len() - barrier.open(name, &stored)?.len(),
            None => stored.len() - barrier::strip(name, &stored)?.len(),
        };
        stored.drain(..header);
        Ok(stored)
    }

    /// The same store, every name read and written through the handle under `prefix`
    /// (within this handle's own scope): what is outside is out of its sight, and what it
    /// writes is tagged under the whole name, so a record cannot be moved between scopes. One
    /// digest, one view and one flusher for all: a scoped handle's batches are the store's.
    pub fn scoped(&self, prefix: &str) -> Store {
        let mut scope = self.scope.clone();
        scope.extend_from_slice(prefix.as_bytes());
        Store {
            local: self.local.clone(),
            follow: self.follow.clone(),
            sending: self.sending.clone(),
            flush_requests: self.flush_requests.clone(),
            flusher: self.flusher.clone(),
            scope,
        }
    }

    /// The name a record has in the whole store.
    fn full_name(&self, name: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.scope.len() + name.len());
        full.extend_from_slice(&self.scope);
        full.extend_from_slice(name);
        full
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.local.refusal()?;
        let scoped;
        let name = if self.scope.is_empty() {
            key
        } else {
            scoped = self.full_name(key);
            &scoped
        };
        let stored = self.local.backend.get(name)?;
        self.local.check_read(name, stored.as_deref())?;
        stored.map(|stored| self.value(name, stored)).transpose()
    }

    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let (prefix, after) = (self.full_name(prefix), after.map(|a| self.full_name(a)));
        self.local.refusal()?;
        let mut entries = self.local.backend.scan(&prefix, after.as_deref(), limit)?;
        entries.retain(|(name, _)| name != barrier::DIGEST_RECORD);
        entries
            .into_iter()
            .map(|(name, stored)| {
                self.local.check_read(&name, Some(&stored))?;
                let value = self.value(&name, stored)?;
                Ok((name[self.scope.len()..].to_vec(), value))
            })
            .collect()
    }

    /// The most changes one batch may hold: work that writes many records (re-wrapping every
    /// material record) splits it into batches of at most this many.
    pub fn max_batch_ops(&self) -> usize {
        // The digest record goes into every batch, and on a shared store the batch's mark.
        let own = if self.local.backend.shared().is_some() {
            2
        } else {
            1
        };
        self.local
            .backend
            .max_batch_ops()
            .saturating_sub(own)
            .max(1)
    }

    /// Applies `batch` atomically; durable with the next flush (use for data that may lag,
    /// such as the audit chain's head).
    pub fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        Ok(self.try_apply(batch)?)
    }

    /// [`Store::apply`], telling a batch refused as [`CommitError::Stale`] from a failure.
    pub fn try_apply(&self, batch: WriteBatch) -> Result<(), CommitError> {
        self.local.refusal().map_err(CommitError::NotApplied)?;
        let batch = batch.within(&self.scope);
        let mut tries = 0u32;
        loop {
            tries += 1;
            match self.apply_once(batch.clone()) {
                Ok(_) => return Ok(()),
                Err(Attempt::Behind(revision)) if tries < MAX_TRIES => self
                    .wait_blocking(revision)
                    .map_err(CommitError::NotApplied)?,
                Err(Attempt::Retry(_)) if tries < MAX_RETRIES => {
                    std::thread::sleep(retry_pause(tries))
                }
                Err(Attempt::Retry(error)) => return Err(CommitError::Unavailable(error)),
                Err(Attempt::Stale) => return Err(CommitError::Stale),
                Err(Attempt::Unknown(error)) => return Err(CommitError::DurabilityUnknown(error)),
                Err(other) => return Err(CommitError::NotApplied(other.into_error())),
            }
        }
    }

    /// Stages `batch` to ride the next batch applied to the store, from any caller: for a
    /// change that must reach disk with the call that made it, and may wait until then to be
    /// applied. The call's own commit carries it (and is one batch, not two); a call that
    /// makes none applies it with [`Store::settle`]; [`Store::durable`] and closing apply
    /// whatever is still staged first. Its records are not read back before they are applied.
    ///
    /// On a store other daemons write (etcd) the batch is applied at once, as
    /// [`Store::try_apply`] does: what it requires unchanged is checked there and then.
    pub fn stage(&self, batch: WriteBatch) -> Result<(), CommitError> {
        if self.local.backend.shared().is_some() {
            return self.try_apply(batch);
        }
        // Nothing to check unchanged on a store no other daemon writes.
        let mut batch = batch.within(&self.scope);
        batch.unchanged.clear();
        self.local
            .staged
            .lock()
            .map_err(|_| CommitError::NotApplied(StoreError("staging lock poisoned".into())))?
            .extend(batch);
        Ok(())
    }

    /// Applies whatever is staged (see [`Store::stage`]), as a batch of its own; nothing when
    /// nothing is.
    pub fn settle(&self) -> Result<(), StoreError> {
        let nothing_staged = self
            .local
            .staged
            .lock()
            .map_err(|_| StoreError("staging lock poisoned".into()))?
            .is_empty();
        if nothing_staged {
            return Ok(());
        }
        Ok(self.try_apply(WriteBatch::new())?)
    }

    fn wait_blocking(&self, revision: i64) -> Result<(), StoreError> {
        match &self.follow {
            Some(follow) => follow.caught_up_blocking(revision),
            None => Err(StoreError("not a shared store".into())),
        }
    }

    /// One try at applying `batch`: on a shared store it may find the view behind.
    /// Returns the revision the batch was applied at on a shared store (0 elsewhere, and where
    /// it is not known: an answer lost, the batch applied all the same).
    fn apply_once(&self, mut batch: WriteBatch) -> Result<i64, Attempt> {
        let Some(shared) = self.local.backend.shared() else {
            return self.local.apply(batch);
        };
        let barrier = self.local.barrier()?;
        let _one_at_a_time = self
            .sending
            .lock()
            .map_err(|_| Attempt::Failed(StoreError("store lock poisoned".into())))?;
        let mut view = self.local.view(barrier)?;
        let unchanged = std::mem::take(&mut batch.unchanged);
        // The view is not held across the round trip: the follower goes on folding other
        // daemons' changes meanwhile (one of which makes this batch's fence fail).
        let before = (view.tree.root(), view.tree.is_empty());
        let (sealed, undo) = barrier.seal_shared_batch(batch, &mut view.tree)?;
        let next = view.tree.root();
        view.tree.undo(undo);
        let fence = view.revision;
        if let Some(follow) = &self.follow {
            follow.sending(next);
        }
        drop(view);
        let (ops, guards) = sealed.into_parts();
        let answer = shared.apply_fenced(ops.clone(), fence, &unchanged);
        let result = self.taken_in(barrier, shared, answer, &ops, (before, next));
        if let Some(follow) = &self.follow {
            follow.sent(&next);
        }
        // The records are in (or never will be): whoever waits on them may go on.
        drop(guards);
        result
    }

    /// The revision of this daemon's batch whose answer was lost (it stores the root `next`,
    /// which the store holds now): the digest's revision, when nothing was written between the
    /// two reads. Otherwise the caches are told of the batch's records as of the view (they
    /// read them again), and 0 is answered.
    fn own_revision(
        &self,
        barrier: &Barrier,
        shared: &dyn SharedEngine,
        ops: &[Op],
        next: barrier::Tag,
    ) -> i64 {
        if let Ok(revision) = shared.fence()
            && matches!(self.stored_root(barrier), Ok(Some(root)) if root == next)
        {
            return revision;
        }
        if let (Some(follow), Ok(view)) = (&self.follow, self.local.digest.lock()) {
            let names: Vec<Vec<u8>> = ops
                .iter()
                .map(|(name, _)| name.clone())
                .filter(|name| name != barrier::DIGEST_RECORD && name != barrier::BATCH_RECORD)
                .collect();
            follow.tell(Changed::Records(&names, view.revision));
        }
        0
    }

    /// What a fenced batch's answer means for the view: `before` is the tree's root (and
    /// whether it was empty) before the batch, `next` the root the batch stores.
    fn taken_in(
        &self,
        barrier: &Barrier,
        shared: &dyn SharedEngine,
        answer: Result<Fenced, StoreError>,
        ops: &[Op],
        (before, next): ((barrier::Tag, bool), barrier::Tag),
    ) -> Result<i64, Attempt> {
        match answer {
            Ok(Fenced::Applied(revision)) => {
                let mut view = self.local.digest.lock().map_err(|_| {
                    Attempt::Failed(StoreError("store digest lock poisoned".into()))
                })?;
                // Unless the feed brought it first, the batch goes into the tree now (nothing
                // came between the fence and it).
                if view.revision < revision {
                    for (name, stored) in ops {
                        if name != barrier::DIGEST_RECORD {
                            barrier.fold(name, stored.as_deref(), &mut view.tree)?;
                        }
                    }
                    view.revision = revision;
                    if let Some(follow) = &self.follow {
                        follow.publish(revision);
                    }
                }
                Ok(revision)
            }
            Ok(Fenced::Behind(revision)) => Err(Attempt::Behind(revision)),
            Ok(Fenced::Stale) => Err(Attempt::Stale),
            // Applied with its answer lost, or not: the stored root tells. A batch applied is
            // delivered by the feed like another daemon's (its records pass their tags) and
            // moves the view.
            Err(error) => match self.stored_root(barrier) {
                Ok(Some(stored)) if stored == next => {
                    tracing::warn!(%error, "a batch reported as failed was applied");
                    Ok(self.own_revision(barrier, shared, ops, next))
                }
                Ok(stored) => {
                    let not_applied = match stored {
                        Some(stored) => stored == before.0,
                        None => before.1,
                    };
                    // Not applied, and nobody else wrote: the same batch may be tried again (a
                    // member down, an election under way).
                    if not_applied {
                        tracing::debug!(%error, "a batch etcd did not take is tried again");
                        return Err(Attempt::Retry(error));
                    }
                    // Another daemon wrote since: whether this batch came before it, the feed
                    // tells once the view has caught up with the store (sending it again
                    // blind could write over that daemon's change).
                    let unknown = |why: String| {
                        Attempt::Unknown(StoreError(format!(
                            "the store's answer was lost and other daemons wrote since: the \
                             change may or may not have been made ({why})"
                        )))
                    };
                    let Some(follow) = &self.follow else {
                        return Err(unknown(error.to_string()));
                    };
                    let fence = shared.fence().map_err(|e| unknown(e.to_string()))?;
                    follow
                        .caught_up_blocking(fence)
                        .map_err(|e| unknown(e.to_string()))?;
                    match follow.own_seen(&next) {
                        Some(revision) => Ok(revision),
                        None => Err(Attempt::Behind(fence)),
                    }
                }
                Err(_) => Err(Attempt::Failed(error)),
            },
        }
    }

    fn stored_root(&self, barrier: &Barrier) -> Result<Option<barrier::Tag>, StoreError> {
        self.local.stored_root(barrier)
    }

    /// Applies `batch` atomically and returns once it is durable.
    pub async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        Ok(self.try_commit(batch).await?)
    }

    /// [`Store::commit`], saying on failure whether the batch was applied: a caller that made
    /// something outside the store for the batch (a device object) may undo it only if not.
    pub async fn try_commit(&self, batch: WriteBatch) -> Result<(), CommitError> {
        self.try_commit_at(batch).await.map(|_| ())
    }

    /// [`Store::try_commit`], returning the revision the batch was applied at on a shared
    /// store (0 elsewhere, or when not known): what a cache of the records it wrote is then
    /// current at.
    pub async fn try_commit_at(&self, batch: WriteBatch) -> Result<i64, CommitError> {
        self.local.refusal().map_err(CommitError::NotApplied)?;
        let batch = batch.within(&self.scope);
        if self.local.backend.shared().is_none() {
            // The flusher applies it, with the batches of the commits that gathered with it,
            // then flushes them all.
            let (answer, done) = oneshot::channel();
            self.ask_flusher(Request::Commit(batch, answer))
                .map_err(CommitError::NotApplied)?;
            return match done.await {
                Ok(outcome) => outcome.map(|()| 0),
                Err(_) => Err(CommitError::DurabilityUnknown(StoreError(
                    "flusher dropped a request".into(),
                ))),
            };
        }
        let mut tries = 0u32;
        let revision = loop {
            tries += 1;
            match self.apply_once(batch.clone()) {
                Ok(revision) => break revision,
                Err(Attempt::Behind(revision)) if tries < MAX_TRIES => match &self.follow {
                    Some(follow) => follow
                        .caught_up(revision)
                        .await
                        .map_err(CommitError::NotApplied)?,
                    None => return Err(CommitError::NotApplied(StoreError("not shared".into()))),
                },
                Err(Attempt::Retry(_)) if tries < MAX_RETRIES => {
                    tokio::time::sleep(retry_pause(tries)).await
                }
                Err(Attempt::Retry(error)) => return Err(CommitError::Unavailable(error)),
                Err(Attempt::Stale) => return Err(CommitError::Stale),
                Err(Attempt::Unknown(error)) => return Err(CommitError::DurabilityUnknown(error)),
                Err(other) => return Err(CommitError::NotApplied(other.into_error())),
            }
        };
        drop(batch);
        self.durable()
            .await
            .map_err(CommitError::DurabilityUnknown)?;
        Ok(revision)
    }

    /// Waits until everything applied so far is on disk, sharing the flush with every other
    /// caller waiting at the same time.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.settle()?;
        let (waiter, done) = oneshot::channel();
        self.ask_flusher(Request::Flush(waiter))?;
        done.await
            .map_err(|_| StoreError("flusher dropped a request".into()))?
    }

    fn ask_flusher(&self, request: Request) -> Result<(), StoreError> {
        let sender = self
            .flush_requests
            .lock()
            .map_err(|_| StoreError("flusher lock poisoned".into()))?;
        let sender = sender
            .as_ref()
            .ok_or_else(|| StoreError("store is closed".into()))?;
        sender
            .send(request)
            .map_err(|_| StoreError("flusher has stopped".into()))
    }

    /// Whether the store was refused (a record failed its integrity check while serving):
    /// every call on it fails from then on.
    pub fn refused(&self) -> bool {
        self.local.refused.get().is_some()
    }

    /// Applies and syncs without the flusher thread (start-up and offline commands).
    pub fn commit_blocking(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.apply(batch)?;
        self.local.backend.sync()
    }

    /// Stops the flusher after the flushes already asked for, and syncs what is still staged
    /// or applied since; later commits fail. The tree of the record-integrity check is kept
    /// beside the records, for the next open (see `aside`).
    pub fn close(&self) {
        self.stop_checking();
        let staged = self.local.staged.lock().is_ok_and(|s| !s.is_empty());
        if staged && let Err(error) = self.settle().and_then(|()| self.local.backend.sync()) {
            tracing::error!(%error, "the changes staged at closing could not be written");
        }
        if let Ok(mut sender) = self.flush_requests.lock() {
            sender.take();
        }
        if let Some(handle) = self.flusher.lock().ok().and_then(|mut h| h.take()) {
            let _ = handle.join();
        }
        // Every batch is applied: the tree is the records'. The next open reads it back
        // instead of every record (kept once per root: closing again keeps nothing new).
        self.keep_tree();
    }
}

impl Drop for Store {
    /// The last handle of a store closes it (a scoped handle dropped leaves it open), which
    /// keeps its tree again if a batch was applied after an earlier close (work still under
    /// way on a blocking thread when the daemon closed the store).
    fn drop(&mut self) {
        if Arc::strong_count(&self.flush_requests) == 1 {
            self.close();
        }
    }
}

#[cfg(test)]
mod tests;
