//! A store that other daemons write too (etcd): how this daemon's view follows theirs.
//!
//! Every batch of every daemon writes the digest record (see `barrier`), so the digest
//! record's last revision names the state of the whole store. Each daemon keeps the revision
//! its view (its digest tree, and the caches of the services above the store) is current at:
//! its **view**. A batch is applied only if the digest record is still at the view
//! ([`SharedEngine::apply_fenced`]); otherwise nothing is written, the daemon catches up and the
//! store seals the batch again over the new tree. So no daemon ever stores a digest that
//! leaves out another's change.
//!
//! That fence makes the digest right, not the records: a caller that read a record and writes
//! a new version of it names the record with [`super::WriteBatch::require_unchanged`], and its
//! batch is refused as [`super::CommitError::Stale`] if another daemon changed the record after
//! the view the caller read at. The caller then waits for the view to catch up and does its
//! change again on the fresh record.
//!
//! **Catching up.** The engine's change feed ([`SharedEngine::follow`], an etcd watch on the
//! prefix) delivers every transaction in order. The follower thread checks each record's tag,
//! folds it into the tree, checks that the tree's root is the digest the transaction stored
//! (a change made without the master key is refused here, as it would be at start-up), hands
//! the changed record names to the daemon's listener — which refreshes its caches from the
//! store — and only then moves the view on. So a view never runs ahead of the caches: a caller
//! that reads the view and then a cache sees at least the state of that view.
//!
//! While the feed is broken (etcd out of reach, a member restarting) or after a change failed
//! its checks, [`super::Store::out_of_date`] says why, and the daemon refuses to serve from its
//! caches until the feed is back.

use super::barrier::{BATCH_RECORD, Barrier, DIGEST_RECORD, SetDigest};
use super::{Entry, Op, StoreError};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A transaction's changes, as the change feed delivers them.
#[derive(Debug)]
pub enum FeedEvent {
    /// Every change one transaction made, at `revision` (record names as the store knows them).
    Changes { revision: i64, ops: Vec<Op> },
    /// The feed broke: changes may go unseen until it is back.
    Interrupted(String),
    /// The feed is back and delivers everything since the last change it delivered.
    Resumed,
    /// The changes after the last one delivered are gone from the engine's history: the view
    /// must be read again whole.
    Lost(String),
}

/// Every record at one revision.
#[derive(Debug)]
pub struct Snapshot {
    /// The revision read at: the feed follows from the next one.
    pub revision: i64,
    /// The revision of the digest record's last change (0 when there is none).
    pub fence: i64,
    pub entries: Vec<Entry>,
}

/// What became of a fenced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fenced {
    /// Applied, at this revision.
    Applied(i64),
    /// Not applied: the digest record moved on (to this revision) since the view.
    Behind(i64),
    /// Not applied: a record the batch required unchanged was changed after the caller's view.
    Stale,
}

/// An engine other processes write too.
pub trait SharedEngine: Send + Sync {
    /// Every record, read at one revision.
    fn snapshot(&self) -> Result<Snapshot, StoreError>;

    /// Applies `ops` only if the digest record's last change is at `view`, and none of the
    /// records `unchanged` names changed after the view given with it.
    fn apply_fenced(
        &self,
        ops: Vec<Op>,
        view: i64,
        unchanged: &[(Vec<u8>, i64, bool)],
    ) -> Result<Fenced, StoreError>;

    /// The revision of the digest record's last change, as the engine holds it now (a read
    /// that sees every change acknowledged before it).
    fn fence(&self) -> Result<i64, StoreError>;

    /// Lists the daemon `id` with `details` for as long as this process lives.
    fn announce(&self, id: &str, details: &str) -> Result<(), StoreError>;

    /// Every daemon listed: its id, what it said of itself, and the seconds left of its lease.
    fn daemons(&self) -> Result<Vec<(String, String, i64)>, StoreError>;

    /// Who leads `role` now; with `id`, taking the lead for it when nobody has it. A lead ends
    /// with the life of the process that took it.
    fn leader(&self, role: &str, id: Option<&str>) -> Result<Option<String>, StoreError>;

    /// Starts delivering every change after `revision` to `sink`, in order, until `sink` is
    /// dropped.
    fn follow(
        &self,
        revision: i64,
        sink: std::sync::mpsc::Sender<FeedEvent>,
    ) -> Result<(), StoreError>;
}

/// What changed, as a listener hears it, and the revision the view moves to once the
/// listener has taken it in (what a listener reads of the store is at least that new).
#[derive(Debug, Clone, Copy)]
pub enum Changed<'a> {
    /// These records (names as the store knows them).
    Records(&'a [Vec<u8>], i64),
    /// Anything: the view was read again whole.
    All(i64),
}

/// Hears every change another daemon made, before the view moves past it. It runs while the
/// view is locked: it may read the store, never write it.
pub type Listener = Arc<dyn Fn(Changed<'_>) + Send + Sync>;

/// The digest tree and the revision it is current at.
#[derive(Debug)]
pub struct View {
    pub tree: SetDigest,
    pub revision: i64,
}

/// The follower's state, shared with the store.
pub struct Follow {
    /// The view's revision, published once the listener has heard everything up to it.
    published: tokio::sync::watch::Sender<i64>,
    listener: Mutex<Hearing>,
    /// Why the view may be out of date (`None`: it is not).
    problem: Mutex<Option<String>>,
    /// Whether `problem` holds one (read on every call, without the lock).
    troubled: std::sync::atomic::AtomicBool,
    /// When the feed broke, while it is broken: a break mended within [`GRACE`] (the watch
    /// moved to another member) stops nothing.
    broken_since: Mutex<Option<std::time::Instant>>,
    /// Since when the view has been behind what the store held at a check (see
    /// [`watch_freshness`]), and the revision it must reach.
    behind: Mutex<Option<(std::time::Instant, i64)>>,
    /// When a quorum read of the digest's revision last succeeded, in milliseconds since
    /// `born` (a daemon cut off from the quorum may still have a watch that says nothing).
    checked_ms: std::sync::atomic::AtomicU64,
    born: std::time::Instant,
    /// The digest roots of this daemon's batches on their way to the engine: the feed may bring
    /// one back before its sender has taken it in, and its sender updates the caches.
    own: Mutex<Vec<super::barrier::Tag>>,
    /// Of those, the ones the feed brought back, and at which revision.
    own_seen: Mutex<Vec<(super::barrier::Tag, i64)>>,
    /// Catch-ups' quorum reads of the digest's revision are made one at a time.
    reading: tokio::sync::Mutex<()>,
    /// When the last of those reads began, and what it answered (a failure too).
    last_read: Mutex<Option<(std::time::Instant, Result<i64, StoreError>)>>,
    /// How many of those reads have been made.
    reads_done: std::sync::atomic::AtomicU64,
}

/// How long a daemon serves without one successful quorum read of the store's revision: long
/// enough for an etcd election (about a second with etcd's defaults), short enough that a
/// daemon cut off from the quorum stops soon.
pub const UNCHECKED: Duration = Duration::from_secs(3);

/// How often a daemon compares its view with the store's revision read from a quorum.
pub const FRESHNESS_CHECK: Duration = Duration::from_millis(200);

/// How long a broken feed may take to come back before the daemon stops serving: well within
/// the one-second bound on how stale a view may be.
pub const GRACE: Duration = Duration::from_millis(400);

#[derive(Default)]
struct Hearing {
    listener: Option<Listener>,
    /// Changed before a listener was there: heard by the first one.
    pending: BTreeSet<Vec<u8>>,
    pending_all: bool,
    pending_revision: i64,
}

/// How long a caller waits for its view to catch up before it fails.
const CATCH_UP: Duration = Duration::from_secs(10);

impl Follow {
    pub fn new(revision: i64) -> Arc<Self> {
        Arc::new(Self {
            published: tokio::sync::watch::Sender::new(revision),
            listener: Mutex::new(Hearing::default()),
            problem: Mutex::new(None),
            troubled: std::sync::atomic::AtomicBool::new(false),
            broken_since: Mutex::new(None),
            behind: Mutex::new(None),
            checked_ms: std::sync::atomic::AtomicU64::new(0),
            born: std::time::Instant::now(),
            own: Mutex::new(Vec::new()),
            own_seen: Mutex::new(Vec::new()),
            reading: tokio::sync::Mutex::new(()),
            last_read: Mutex::new(None),
            reads_done: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The digest's revision from a quorum read (`read`) begun after `since`, so that it holds
    /// every change acknowledged before then. Callers share reads, made one at a time: a
    /// caller takes the answer of the last read if that read began after its `since` (one
    /// begun while it waited, or, for a call that caught up once already, its own earlier
    /// one), without waiting for its turn; a failure so shared fails it at once.
    pub async fn fresh_fence(
        &self,
        since: std::time::Instant,
        read: impl std::future::Future<Output = Result<i64, StoreError>>,
    ) -> Result<i64, StoreError> {
        if let Some(answer) = self.answer_since(since) {
            return answer;
        }
        let _turn = self.reading.lock().await;
        if let Some(answer) = self.answer_since(since) {
            return answer;
        }
        let began = std::time::Instant::now();
        self.reads_done
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        if let Some(m) = crate::metrics::metrics() {
            m.store_catch_up_reads.inc();
        }
        let answer = read.await;
        if let Ok(mut last) = self.last_read.lock() {
            *last = Some((began, answer.clone()));
        }
        answer
    }

    /// The answer of the last catch-up read, if it began after `since`.
    fn answer_since(&self, since: std::time::Instant) -> Option<Result<i64, StoreError>> {
        match &*self.last_read.lock().ok()? {
            Some((began, answer)) if *began > since => Some(answer.clone()),
            _ => None,
        }
    }

    /// How many catch-ups' quorum reads have been made.
    pub fn catch_up_reads(&self) -> u64 {
        self.reads_done.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The revision at which the feed brought back this daemon's batch storing `root`.
    pub fn own_seen(&self, root: &super::barrier::Tag) -> Option<i64> {
        self.own_seen
            .lock()
            .ok()?
            .iter()
            .find(|(r, _)| r == root)
            .map(|(_, revision)| *revision)
    }

    /// Marks a batch of this daemon (by the root it stores) as on its way.
    pub fn sending(&self, root: super::barrier::Tag) {
        if let Ok(mut own) = self.own.lock() {
            own.push(root);
        }
    }

    /// The batch marked by `root` has its answer.
    pub fn sent(&self, root: &super::barrier::Tag) {
        if let Ok(mut own) = self.own.lock()
            && let Some(at) = own.iter().position(|r| r == root)
        {
            own.swap_remove(at);
        }
        if let Ok(mut seen) = self.own_seen.lock() {
            seen.retain(|(r, _)| r != root);
        }
    }

    fn is_own(&self, root: &super::barrier::Tag) -> bool {
        self.own.lock().is_ok_and(|own| own.contains(root))
    }

    pub fn view(&self) -> i64 {
        *self.published.borrow()
    }

    pub fn publish(&self, revision: i64) {
        self.published.send_if_modified(|current| {
            if revision > *current {
                *current = revision;
                true
            } else {
                false
            }
        });
    }

    pub fn problem(&self) -> Option<String> {
        let unchecked = (self.born.elapsed().as_millis() as u64)
            .saturating_sub(self.checked_ms.load(std::sync::atomic::Ordering::Acquire));
        if unchecked > UNCHECKED.as_millis() as u64 {
            return Some(format!(
                "no read of the store's revision from a quorum has succeeded for {unchecked} ms"
            ));
        }
        if !self.troubled.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        if let Some((since, revision)) = self.behind.lock().ok().and_then(|b| *b) {
            if self.view() >= revision {
                // Caught up since the check.
            } else if since.elapsed() >= GRACE {
                return Some(format!(
                    "its view is at revision {}, the store was at {revision} {} ms ago (a \
                     change feed from a member that lags?)",
                    self.view(),
                    since.elapsed().as_millis()
                ));
            }
        }
        let broken_since = self.broken_since.lock().ok().and_then(|b| *b);
        if broken_since.is_some_and(|since| since.elapsed() < GRACE) {
            return None;
        }
        self.problem.lock().ok().and_then(|p| p.clone())
    }

    /// Compares the view with `fence`, the digest's revision a quorum read just gave: a view
    /// that stays behind it past the grace stops the daemon serving (the feed may be alive and
    /// still late: a member that restarted serves its watches from its own, older state).
    pub fn compare(&self, fence: i64) {
        self.checked_ms.store(
            self.born.elapsed().as_millis() as u64,
            std::sync::atomic::Ordering::Release,
        );
        let Ok(mut behind) = self.behind.lock() else {
            return;
        };
        if self.view() >= fence {
            *behind = None;
        } else if behind.is_none_or(|(_, revision)| self.view() >= revision) {
            *behind = Some((std::time::Instant::now(), fence));
        }
        let behind_now = behind.is_some();
        drop(behind);
        self.refresh_trouble(behind_now);
    }

    fn refresh_trouble(&self, behind: bool) {
        let problem = self.problem.lock().ok().is_some_and(|p| p.is_some());
        self.troubled
            .store(behind || problem, std::sync::atomic::Ordering::Release);
    }

    /// The feed broke (`Some`, why) or is back (`None`).
    fn set_broken(&self, why: Option<String>) {
        if let Ok(mut since) = self.broken_since.lock() {
            // Broken since the first break not mended, however often it is tried again.
            *since = match (&why, *since) {
                (None, _) => None,
                (Some(_), Some(first)) => Some(first),
                (Some(_), None) => Some(std::time::Instant::now()),
            };
        }
        self.set_problem(why);
    }

    fn set_problem(&self, problem: Option<String>) {
        if let Ok(mut slot) = self.problem.lock() {
            *slot = problem;
        }
        let behind = self.behind.lock().ok().is_some_and(|b| b.is_some());
        self.refresh_trouble(behind);
    }

    /// Waits until the view is at `revision` or later.
    pub async fn caught_up(&self, revision: i64) -> Result<(), StoreError> {
        let mut receiver = self.published.subscribe();
        match tokio::time::timeout(CATCH_UP, receiver.wait_for(|seen| *seen >= revision)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(self.behind(revision)),
        }
    }

    /// [`Follow::caught_up`], for callers outside the runtime (start-up, offline commands).
    pub fn caught_up_blocking(&self, revision: i64) -> Result<(), StoreError> {
        let deadline = std::time::Instant::now() + CATCH_UP;
        while self.view() < revision {
            if std::time::Instant::now() > deadline {
                return Err(self.behind(revision));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    fn behind(&self, revision: i64) -> StoreError {
        StoreError(format!(
            "this daemon's view of the shared store did not catch up with revision {revision} \
             within {} s{}",
            CATCH_UP.as_secs(),
            self.problem()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        ))
    }

    /// Installs the listener; it hears at once what changed before it was there.
    pub fn listen(&self, listener: Listener) {
        let (pending, all, revision) = match self.listener.lock() {
            Ok(mut hearing) => {
                hearing.listener = Some(listener.clone());
                (
                    std::mem::take(&mut hearing.pending),
                    std::mem::take(&mut hearing.pending_all),
                    hearing.pending_revision,
                )
            }
            Err(_) => return,
        };
        if all {
            listener(Changed::All(revision));
        } else if !pending.is_empty() {
            let names: Vec<_> = pending.into_iter().collect();
            listener(Changed::Records(&names, revision));
        }
    }

    /// Tells the listener (or keeps for it) what changed; the caller holds the view.
    pub fn tell(&self, changed: Changed<'_>) {
        let listener = match self.listener.lock() {
            Ok(mut hearing) => match &hearing.listener {
                Some(listener) => listener.clone(),
                None => {
                    match changed {
                        Changed::All(revision) => {
                            hearing.pending_all = true;
                            hearing.pending_revision = revision;
                        }
                        Changed::Records(names, revision) => {
                            hearing.pending.extend(names.iter().cloned());
                            hearing.pending_revision = revision;
                        }
                    }
                    return;
                }
            },
            Err(_) => return,
        };
        listener(changed);
    }
}

/// Follows the engine's feed for the store: folds other daemons' changes into `view`, tells
/// the listener, publishes the view. Runs until the feed ends (the store is dropped).
pub fn run(
    engine: std::sync::Weak<dyn super::StoreBackend>,
    barrier: Arc<Barrier>,
    view: Arc<Mutex<View>>,
    follow: Arc<Follow>,
    mut events: std::sync::mpsc::Receiver<FeedEvent>,
) {
    let mut broken = false;
    while let Ok(event) = events.recv() {
        match event {
            FeedEvent::Changes { revision, ops } if !broken => {
                // The view's lock is held from the fold to the publication: no batch of this
                // daemon is applied (and publishes a later view) while the caches still lack
                // the change.
                let Ok(mut locked) = view.lock() else {
                    broken = true;
                    continue;
                };
                match fold(&barrier, &mut locked, revision, &ops) {
                    Ok(None) => {}
                    Ok(Some((names, root))) => {
                        // This daemon's own batch, back before its sender took it in: the
                        // sender updates the caches (with the revision it learns).
                        if follow.is_own(&root) {
                            if let Ok(mut seen) = follow.own_seen.lock() {
                                seen.push((root, revision));
                            }
                        } else {
                            follow.tell(Changed::Records(&names, revision));
                        }
                        locked.revision = revision;
                        follow.publish(revision);
                    }
                    Err(error) => {
                        tracing::error!(%error, revision,
                            "a change in the shared store failed its checks: this daemon stops \
                             serving until it is restarted on a store that passes them");
                        follow.set_problem(Some(format!(
                            "a change at revision {revision} failed its integrity checks"
                        )));
                        broken = true;
                    }
                }
            }
            FeedEvent::Changes { .. } => {}
            FeedEvent::Interrupted(why) if !broken => {
                tracing::warn!(%why, "the shared store's change feed broke; serving stops unless it is back within the grace");
                follow.set_broken(Some(format!("the change feed broke: {why}")));
            }
            FeedEvent::Resumed if !broken => {
                if follow.troubled.load(std::sync::atomic::Ordering::Acquire) {
                    tracing::info!("the shared store's change feed is back");
                }
                follow.set_broken(None);
            }
            FeedEvent::Lost(why) if !broken => {
                tracing::warn!(%why, "the shared store's history moved past this daemon's view: reading it again whole");
                follow.set_problem(Some(format!("reading the store again: {why}")));
                // The store is gone (the daemon stopping): nothing to follow.
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let Ok(mut locked) = view.lock() else {
                    broken = true;
                    continue;
                };
                match reread(&*engine, &barrier, &mut locked) {
                    Ok((revision, fence)) => {
                        follow.tell(Changed::All(fence));
                        follow.publish(fence);
                        drop(locked);
                        // The old feed has ended; a new one follows from the snapshot.
                        let (sink, fresh) = std::sync::mpsc::channel();
                        let followed = engine
                            .shared()
                            .ok_or_else(|| StoreError("not a shared store".into()))
                            .and_then(|shared| shared.follow(revision, sink));
                        if let Err(error) = followed {
                            tracing::error!(%error, "cannot follow the shared store again");
                            follow.set_problem(Some(error.to_string()));
                            broken = true;
                            continue;
                        }
                        events = fresh;
                        follow.set_problem(None);
                    }
                    Err(error) => {
                        tracing::error!(%error, "the shared store does not pass its checks");
                        follow.set_problem(Some(error.to_string()));
                        broken = true;
                    }
                }
            }
            _ => {}
        }
    }
}

/// Every [`FRESHNESS_CHECK`], reads the digest's revision from a quorum and compares the view
/// with it; ends when the store is gone.
pub fn watch_freshness(engine: std::sync::Weak<dyn super::StoreBackend>, follow: Arc<Follow>) {
    loop {
        std::thread::sleep(FRESHNESS_CHECK);
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let Some(shared) = engine.shared() else {
            return;
        };
        match shared.fence() {
            Ok(fence) => follow.compare(fence),
            // Unreachable: the feed says so too, and the next check tries again.
            Err(error) => tracing::debug!(%error, "cannot read the store's revision"),
        }
    }
}

/// A transaction folded in: the records it named, and the root it stored.
type Folded = (Vec<Vec<u8>>, super::barrier::Tag);

/// Folds one transaction into the view's tree (the caller moves the view's revision once the
/// listener has heard it). `None`: it was this daemon's own (already in the view).
fn fold(
    barrier: &Barrier,
    view: &mut View,
    revision: i64,
    ops: &[Op],
) -> Result<Option<Folded>, StoreError> {
    if revision <= view.revision {
        return Ok(None);
    }
    let mut names = Vec::with_capacity(ops.len());
    let mut stored_root = None;
    for (name, stored) in ops {
        if name == DIGEST_RECORD {
            let stored = stored
                .as_deref()
                .ok_or_else(|| StoreError("the store's digest record was removed".into()))?;
            stored_root = Some(barrier.stored_root(stored)?);
            continue;
        }
        barrier.fold(name, stored.as_deref(), &mut view.tree)?;
        // The batch's mark is the store's own: nobody listens for it.
        if name != BATCH_RECORD {
            names.push(name.clone());
        }
    }
    match stored_root {
        Some(root) if root == view.tree.root() => Ok(Some((names, root))),
        _ => Err(super::IntegrityError::Digest.into()),
    }
}

/// Reads the whole store again into `view`; returns the snapshot's revision and the fence.
fn reread(
    engine: &dyn super::StoreBackend,
    barrier: &Barrier,
    view: &mut View,
) -> Result<(i64, i64), StoreError> {
    let shared = engine
        .shared()
        .ok_or_else(|| StoreError("not a shared store".into()))?;
    let snapshot = shared.snapshot()?;
    view.tree = barrier.check_all(snapshot.entries.into_iter().map(Ok))?;
    view.revision = snapshot.fence;
    Ok((snapshot.revision, snapshot.fence))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catch-up never takes the answer of a read begun before it came (it could miss a
    /// change acknowledged just before), and takes that of one begun after, without reading:
    /// one another caller began while it waited, or its own call's earlier one; a failure
    /// too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn catch_ups_share_only_reads_begun_after_they_came() {
        let follow = Follow::new(0);
        let now = std::time::Instant::now;
        let came = now();
        assert_eq!(follow.fresh_fence(came, async { Ok(5) }).await.unwrap(), 5);
        // The same caller again (a call that has caught up once): no second read.
        assert_eq!(follow.fresh_fence(came, async { Ok(6) }).await.unwrap(), 5);
        let (release, held) = tokio::sync::oneshot::channel::<()>();
        let first = tokio::spawn({
            let follow = follow.clone();
            async move {
                follow
                    .fresh_fence(now(), async {
                        let _ = held.await;
                        Ok(7)
                    })
                    .await
            }
        });
        // The first read is under way (it holds the turn) before the others come.
        while follow.reading.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        let spawn = |answer: i64| {
            let follow = follow.clone();
            tokio::spawn(async move { follow.fresh_fence(now(), async move { Ok(answer) }).await })
        };
        let second = spawn(9);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let third = spawn(11);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = release.send(());
        assert_eq!(first.await.unwrap().unwrap(), 7);
        // Came while the first read ran: reads again.
        assert_eq!(second.await.unwrap().unwrap(), 9);
        // Came while the first ran too, and waited while the second (begun after it) ran.
        assert_eq!(third.await.unwrap().unwrap(), 9);
        assert_eq!(follow.catch_up_reads(), 3);

        // A read that fails fails the catch-ups it serves, at once; a caller come after it
        // reads again.
        let came = now();
        let down = || async { Err(StoreError("etcd out of reach".into())) };
        assert!(follow.fresh_fence(came, down()).await.is_err());
        assert!(follow.fresh_fence(came, async { Ok(13) }).await.is_err());
        assert_eq!(
            follow.fresh_fence(now(), async { Ok(13) }).await.unwrap(),
            13
        );
        assert_eq!(follow.catch_up_reads(), 5);
    }
}
