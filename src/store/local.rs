//! Applying and flushing on a store no other daemon writes: what a store's handles and its
//! flusher thread share, and the flusher, which gathers concurrent commits, applies their
//! batches as one, and makes them durable with one flush (see the module docs of `store`).

use super::shared::View;
use super::{
    Attempt, Barrier, CommitError, StoreBackend, StoreError, Waiter, WriteBatch, barrier,
    check_every_record,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What applying a batch takes, shared by a store's handles and its flusher (which applies
/// the batches of concurrent commits to a store no other daemon writes as one).
#[derive(Clone)]
pub(super) struct Local {
    pub(super) backend: Arc<dyn StoreBackend>,
    /// `None` for offline readers without the passphrase: they read unchecked, never write.
    pub(super) barrier: Option<Arc<Barrier>>,
    /// The digest of every record as stored; changes are folded in under this lock.
    pub(super) digest: Arc<Mutex<View>>,
    /// A failed `apply` whose outcome could not be read back: the tree is rebuilt from the
    /// store before the next one.
    pub(super) digest_uncertain: Arc<AtomicBool>,
    /// Changes staged for the next batch (full names), on a store no other daemon writes.
    pub(super) staged: Arc<Mutex<WriteBatch>>,
    /// Why the store is refused from here on: a record failed its check after the daemon
    /// began to serve (the tree was read back from its copy, see `aside`).
    pub(super) refused: Arc<std::sync::OnceLock<String>>,
    /// The pass checking every record against a tree read back from its copy, while it runs.
    pub(super) checking: Arc<Mutex<Option<super::aside::Checking>>>,
    /// Whether records are still to be checked against the tree as they are read.
    pub(super) tree_unchecked: Arc<AtomicBool>,
    /// The root of the tree last kept beside the records (see `aside`).
    pub(super) kept: Arc<Mutex<Option<barrier::Tag>>>,
}

/// What the flusher is asked for: a flush, or a commit (its batch applied, then flushed).
pub(super) enum Request {
    Flush(Waiter),
    Commit(WriteBatch, oneshot::Sender<Result<(), CommitError>>),
}

impl Local {
    pub(super) fn barrier(&self) -> Result<&Barrier, Attempt> {
        self.barrier.as_deref().ok_or_else(|| {
            Attempt::Failed(StoreError("this store was opened for reading only".into()))
        })
    }

    /// The view, its tree rebuilt from the store first if a failed batch left it uncertain.
    pub(super) fn view(
        &self,
        barrier: &Barrier,
    ) -> Result<std::sync::MutexGuard<'_, View>, Attempt> {
        let mut view = self
            .digest
            .lock()
            .map_err(|_| Attempt::Failed(StoreError("store digest lock poisoned".into())))?;
        if self.digest_uncertain.load(Ordering::Acquire) {
            // Every record checked: a pass against the former tree has nothing left to do.
            view.tree = check_every_record(barrier, &*self.backend)?;
            self.digest_uncertain.store(false, Ordering::Release);
            self.tree_unchecked.store(false, Ordering::Release);
        }
        Ok(view)
    }

    /// Applies `batch` to a store no other daemon writes, with whatever is staged; returns 0
    /// (there are no revisions here).
    pub(super) fn apply(&self, batch: WriteBatch) -> Result<i64, Attempt> {
        let barrier = self.barrier()?;
        let mut view = self.view(barrier)?;
        // What was staged rides this batch (first: the batch's own changes come after it); it
        // is staged again if the batch is not applied.
        let carried = self.take_staged()?;
        let batch = match carried.clone() {
            Some(mut carried) => {
                carried.extend(batch);
                carried
            }
            None => batch,
        };
        let restage = |error: StoreError| {
            if let Some(carried) = carried.clone() {
                self.restage(carried);
            }
            Attempt::Failed(error)
        };
        let (sealed, undo) = barrier.seal_batch(batch, &mut view.tree).map_err(restage)?;
        let next = view.tree.root();
        let (ops, guards) = sealed.into_parts();
        if let Err(error) = self.backend.apply(WriteBatch {
            ops,
            ..WriteBatch::default()
        }) {
            // An engine that may apply a batch whose answer is lost: the root as stored tells
            // which (batches are atomic, and the root is in every one); undoing a lost batch's
            // changes in the tree would make the next batch store a root the records do not
            // have, and the next start refuse the store.
            match self.stored_root(barrier) {
                Ok(Some(stored)) if stored == next => {
                    tracing::warn!(%error, "a batch reported as failed was applied");
                }
                Ok(stored) => {
                    view.tree.undo(undo);
                    // Not what this daemon last wrote either: rebuild the tree from the store.
                    let as_before = match stored {
                        Some(stored) => stored == view.tree.root(),
                        None => view.tree.is_empty(),
                    };
                    if !as_before {
                        self.digest_uncertain.store(true, Ordering::Release);
                    }
                    return Err(restage(error));
                }
                Err(_) => {
                    view.tree.undo(undo);
                    self.digest_uncertain.store(true, Ordering::Release);
                    return Err(restage(error));
                }
            }
        }
        drop(view);
        // The records are in: whoever waits on them may go on.
        drop(guards);
        Ok(0)
    }

    /// What is staged, taken to ride a batch (`None` when nothing is).
    pub(super) fn take_staged(&self) -> Result<Option<WriteBatch>, Attempt> {
        let mut staged = self
            .staged
            .lock()
            .map_err(|_| Attempt::Failed(StoreError("staging lock poisoned".into())))?;
        Ok((!staged.is_empty()).then(|| std::mem::take(&mut *staged)))
    }

    /// Stages again what rode a batch that was not applied (before what was staged since).
    pub(super) fn restage(&self, carried: WriteBatch) {
        if let Ok(mut staged) = self.staged.lock() {
            let since = std::mem::replace(&mut *staged, carried);
            staged.extend(since);
        }
    }

    /// The tree's root as the store holds it now (`None` for a store without records).
    pub(super) fn stored_root(
        &self,
        barrier: &Barrier,
    ) -> Result<Option<barrier::Tag>, StoreError> {
        match self.backend.get(barrier::DIGEST_RECORD)? {
            None => Ok(None),
            Some(stored) => barrier.stored_root(&stored).map(Some),
        }
    }
}

/// How long a flush may wait for more callers when the previous one was shared: like
/// PostgreSQL's `commit_delay`, it only ever applies under concurrency.
const GATHER: Duration = Duration::from_micros(800);

pub(super) fn run_flusher(local: Local, requests: mpsc::Receiver<Request>) {
    let mut previous = 1usize;
    while let Ok(first) = requests.recv() {
        // Everyone who asked before this flush starts is covered by it.
        let mut gathered = vec![first];
        gathered.extend(requests.try_iter());
        // The previous flush was shared: its callers are likely on their way back. Wait a
        // little for them (never longer than GATHER), so one flush serves them all again.
        if previous > 1 && gathered.len() < previous {
            let deadline = Instant::now() + GATHER;
            while gathered.len() < previous {
                let left = deadline.saturating_duration_since(Instant::now());
                match requests.recv_timeout(left) {
                    Ok(request) => gathered.push(request),
                    Err(_) => break,
                }
            }
        }
        previous = gathered.len();
        if let Some(m) = crate::metrics::metrics() {
            m.flush_batch.observe(gathered.len() as f64);
        }
        let mut waiters = Vec::new();
        let mut commits = Vec::new();
        for request in gathered {
            match request {
                Request::Flush(waiter) => waiters.push(waiter),
                Request::Commit(batch, answer) => commits.push((batch, answer)),
            }
        }
        let applied = apply_together(&local, commits);
        let result = local.backend.sync();
        if let Err(error) = &result {
            tracing::error!(%error, "flush failed; the calls waiting on it fail");
        }
        for (answer, outcome) in applied {
            let outcome =
                outcome.and_then(|()| result.clone().map_err(CommitError::DurabilityUnknown));
            let _ = answer.send(outcome);
        }
        for waiter in waiters {
            let _ = waiter.send(result.clone());
        }
    }
}

/// An answer to a commit, and its batch's outcome.
type Applied = (
    oneshot::Sender<Result<(), CommitError>>,
    Result<(), CommitError>,
);

/// Applies the batches of commits that gathered as one batch: sled writes every batch to its
/// log as two writes (it rolls its buffer before and after the batch's manifest), so N
/// concurrent CreateKeys cost two writes, not 2N. A merged batch that is not applied is tried
/// again batch by batch, so that each commit has its own answer.
fn apply_together(
    local: &Local,
    commits: Vec<(WriteBatch, oneshot::Sender<Result<(), CommitError>>)>,
) -> Vec<Applied> {
    let answer = |outcome: Result<i64, Attempt>| match outcome {
        Ok(_) => Ok(()),
        Err(Attempt::Unknown(error)) => Err(CommitError::DurabilityUnknown(error)),
        Err(Attempt::Stale) => Err(CommitError::Stale),
        Err(other) => Err(CommitError::NotApplied(other.into_error())),
    };
    if commits.len() > 1 {
        let mut merged = WriteBatch::new();
        for (batch, _) in &commits {
            merged.extend(batch.clone());
        }
        if local.apply(merged).is_ok() {
            return commits
                .into_iter()
                .map(|(_, sender)| (sender, Ok(())))
                .collect();
        }
    }
    commits
        .into_iter()
        .map(|(batch, sender)| (sender, answer(local.apply(batch))))
        .collect()
}
