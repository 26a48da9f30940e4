//! What a store keeps beside its records: state derived from them that a start reads instead of
//! every record, bound to the records as they were when it was kept.
//!
//! - **The tree of the record-integrity check** is kept at every close. The next open takes
//!   it back when its root is the authenticated root the store holds (`barrier/digest`): by
//!   SHA-256's collision resistance it is then the tree of the records as they were last
//!   written, without reading one of them. The records themselves are checked against it
//!   from then on: each record a call reads, before it is used, and every record by a pass
//!   beside serving. A record edited while the daemon was not looking (changed, rolled back,
//!   added) is refused when read; one removed is refused when a call asks for it, and found
//!   by the pass otherwise. From the first record that fails, the store refuses every read
//!   and write, and says why in the log.
//! - **Other state** ([`Store::put_aside`], the key index of each account) is authenticated
//!   like a record and given back only while the records are exactly those it was kept with.
//!
//! Anything missing, damaged or out of date is ignored: the start reads every record, as it
//! does after a crash.

use super::barrier::{self, Barrier, SetDigest};
use super::local::Local;
use super::{CHECK_PAGE, Store, StoreBackend, StoreError, read_ahead};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

/// The name the tree is kept under.
const TREE: &str = "tree";
const ROOT_LEN: usize = 32;

/// The pass over every record, while it runs.
pub(super) struct Checking {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// The name a kept state is authenticated under: not a record's.
fn label(name: &str) -> Vec<u8> {
    format!("\0aside/{name}").into_bytes()
}

/// Seals `bytes` bound to `root`.
fn seal(
    barrier: &Barrier,
    name: &str,
    root: &barrier::Tag,
    bytes: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let mut value = Vec::with_capacity(ROOT_LEN + bytes.len());
    value.extend_from_slice(root);
    value.extend_from_slice(bytes);
    Ok(barrier.seal(&label(name), &value)?.0)
}

/// What was kept under `name`, once its tag is checked, and the root it was kept at.
fn open(
    barrier: &Barrier,
    backend: &dyn StoreBackend,
    name: &str,
) -> Option<(barrier::Tag, Vec<u8>)> {
    let mut stored = match backend.aside(name) {
        Ok(stored) => stored?,
        Err(error) => {
            tracing::warn!(%error, name, "what was kept beside the store could not be read");
            return None;
        }
    };
    let Ok(value) = barrier.open(&label(name), &stored) else {
        tracing::warn!(
            name,
            "what was kept beside the store failed its tag: not used"
        );
        return None;
    };
    let root: barrier::Tag = value.get(..ROOT_LEN)?.try_into().ok()?;
    let header = stored.len() - value.len() + ROOT_LEN;
    stored.drain(..header);
    Some((root, stored))
}

/// The tree kept at the last close, when it is the tree of the records as the store holds
/// them (its root is the stored root).
pub(super) fn read_tree(barrier: &Barrier, backend: &dyn StoreBackend) -> Option<SetDigest> {
    let (kept_at, encoded) = open(barrier, backend, TREE)?;
    let stored = backend.get(barrier::DIGEST_RECORD).ok()??;
    let stored_root = barrier.stored_root(&stored).ok()?;
    if kept_at != stored_root {
        return None;
    }
    let mut tree = SetDigest::decode(&encoded)?;
    (tree.root() == stored_root).then_some(tree)
}

impl Store {
    /// Keeps `bytes` beside the records under `name` (within this handle's scope), bound to
    /// the records as they are now: [`Store::aside`] gives them back only while the store
    /// holds exactly these records. For state derived from the records that a start may read
    /// instead of every one (the key index). Kept only where nobody else writes the store.
    pub fn put_aside(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let Some(barrier) = self.local.barrier.as_deref() else {
            return Ok(());
        };
        if self.follow.is_some() {
            return Ok(());
        }
        self.local.refusal()?;
        let name = self.aside_name(name);
        let root = self
            .local
            .digest
            .lock()
            .map_err(|_| StoreError("store digest lock poisoned".into()))?
            .tree
            .root();
        let sealed = seal(barrier, &name, &root, bytes)?;
        self.local.backend.put_aside(&name, &sealed)
    }

    /// What [`Store::put_aside`] kept under `name`, while the store holds exactly the records
    /// it was kept with (and its tag passes); `None` otherwise.
    pub fn aside(&self, name: &str) -> Option<Vec<u8>> {
        let barrier = self.local.barrier.as_deref()?;
        if self.follow.is_some() {
            return None;
        }
        let name = self.aside_name(name);
        let (kept_at, bytes) = open(barrier, &*self.local.backend, &name)?;
        let root = self.local.digest.lock().ok()?.tree.root();
        (kept_at == root).then_some(bytes)
    }

    /// A kept state's file name: its scope (hex) and name.
    fn aside_name(&self, name: &str) -> String {
        if self.scope.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", hex::encode(&self.scope))
        }
    }

    /// Keeps the tree (at closing, once every batch is applied, and again when the last
    /// handle goes if anything was applied after the close), unless the store was refused or
    /// the tree is uncertain.
    pub(super) fn keep_tree(&self) {
        let Some(barrier) = self.local.barrier.as_deref() else {
            return;
        };
        if self.follow.is_some()
            || self.local.refused.get().is_some()
            || self.local.digest_uncertain.load(Ordering::Acquire)
        {
            return;
        }
        let Ok(mut kept) = self.local.kept.lock() else {
            return;
        };
        let tree = self.local.digest.lock().map(|mut view| {
            let root = view.tree.root();
            (*kept != Some(root)).then(|| (root, view.tree.encode()))
        });
        let Ok(Some((root, encoded))) = tree else {
            return;
        };
        match seal(barrier, TREE, &root, &encoded)
            .and_then(|sealed| self.local.backend.put_aside(TREE, &sealed))
        {
            Ok(()) => *kept = Some(root),
            Err(error) => tracing::warn!(%error,
                "the store's tree was not kept: the next start reads every record"),
        }
    }

    /// Starts the pass that checks every record against a tree read back from its copy.
    pub(super) fn check_in_background(&self) -> Result<(), StoreError> {
        let (local, stop) = (self.local.clone(), Arc::new(AtomicBool::new(false)));
        local.tree_unchecked.store(true, Ordering::Release);
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("keyhaven-check".into())
            .spawn(move || {
                let started = Instant::now();
                match check_against_tree(&local, &stopping) {
                    Ok(Some(records)) => {
                        local.tree_unchecked.store(false, Ordering::Release);
                        tracing::info!(
                            records,
                            check_ms = started.elapsed().as_millis() as u64,
                            "every record checked against the store's tree"
                        );
                    }
                    Ok(None) => {}
                    Err(error) => local.refuse(&error),
                }
            })
            .map_err(|e| StoreError(format!("cannot start the store's check: {e}")))?;
        if let Ok(mut checking) = self.local.checking.lock() {
            *checking = Some(Checking { stop, thread });
        }
        Ok(())
    }

    /// Stops the pass over every record, if it runs, and waits for it.
    pub(super) fn stop_checking(&self) {
        let checking = self.local.checking.lock().ok().and_then(|mut c| c.take());
        if let Some(checking) = checking {
            checking.stop.store(true, Ordering::Release);
            let _ = checking.thread.join();
        }
    }

    /// Whether every record has been checked (at once at the open, or by the pass since).
    pub fn every_record_checked(&self) -> bool {
        !self.local.tree_unchecked.load(Ordering::Acquire)
    }
}

impl Local {
    /// Refuses the store from here on, for `error`.
    pub(super) fn refuse(&self, error: &StoreError) {
        if self.refused.set(error.0.clone()).is_ok() {
            tracing::error!(%error,
                "the store failed its integrity check after the daemon began to serve: every \
                 call on it is refused from here on; restore the data directory from a backup");
        }
    }

    /// An error if the store was refused.
    pub(super) fn refusal(&self) -> Result<(), StoreError> {
        match self.refused.get() {
            Some(why) => Err(StoreError(why.clone())),
            None => Ok(()),
        }
    }

    /// Checks a record as read (`stored` as the engine gave it, `None` when absent) against
    /// the tree while records are still to be checked (see the module docs).
    pub(super) fn check_read(&self, name: &[u8], stored: Option<&[u8]>) -> Result<(), StoreError> {
        if !self.tree_unchecked.load(Ordering::Acquire) {
            return Ok(());
        }
        let tag =
            match stored {
                Some(stored) => Some(barrier::stored_tag(stored).ok_or_else(|| {
                    barrier::IntegrityError::Record(barrier::printable_name(name))
                })?),
                None => None,
            };
        let view = self
            .digest
            .lock()
            .map_err(|_| StoreError("store digest lock poisoned".into()))?;
        if let Err(error) = view.tree.check_record(name, tag.as_ref()) {
            drop(view);
            let error = StoreError::from(error);
            self.refuse(&error);
            return Err(error);
        }
        Ok(())
    }
}

/// Checks every record against the tree: each one's tag (outside the lock), then that the
/// tree has it with that tag, unless this daemon changed it meanwhile; at the end, that no
/// record the tree has is missing. Returns how many records were read, or `None` when
/// stopped.
fn check_against_tree(local: &Local, stop: &AtomicBool) -> Result<Option<usize>, StoreError> {
    let barrier = local
        .barrier
        .as_deref()
        .ok_or_else(|| StoreError("no barrier".into()))?;
    let backend = &*local.backend;
    let lock = || {
        local
            .digest
            .lock()
            .map_err(|_| StoreError("store digest lock poisoned".into()))
    };
    let mut seen = Vec::new();
    let mut records = 0;
    std::thread::scope(|scope| {
        let read = read_ahead(scope, CHECK_PAGE, |after| {
            backend.scan(&[], after, CHECK_PAGE)
        });
        for page in read {
            if stop.load(Ordering::Acquire) {
                return Ok(None);
            }
            let page = page?;
            records += page.len();
            let mut tags = Vec::with_capacity(page.len());
            for (name, stored) in &page {
                if name == barrier::DIGEST_RECORD {
                    continue;
                }
                barrier.open(name, stored)?;
                tags.push((name, barrier::stored_tag(stored)));
            }
            let view = lock()?;
            if !view.tree.unchecked() {
                // The tree was rebuilt from every record meanwhile.
                return Ok(Some(records));
            }
            for (name, tag) in tags {
                if let Some(key) = view.tree.check_record(name, tag.as_ref())? {
                    seen.push(key);
                }
            }
        }
        lock()?.tree.finish_check(&seen)?;
        Ok(Some(records))
    })
}

#[cfg(test)]
#[path = "aside_tests.rs"]
mod tests;
