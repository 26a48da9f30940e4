//! Passes over every record of an engine: the check of them all at open, the copy into
//! another engine, and the reading ahead that lets the engine read the next page while the
//! caller works on the one before.

use super::{Barrier, Entry, StoreBackend, StoreError, WriteBatch, barrier};
use std::sync::mpsc;

/// Records read at a time when the whole store is checked.
pub(super) const CHECK_PAGE: usize = 4096;

/// Copies every record of `from`, as stored (its authenticated form included), into `to`, in
/// batches `to` accepts, the barrier's digest last: a copy cut short holds no digest and is
/// refused when opened, naming why. Returns how many records were copied. `to` must hold none
/// of them yet.
pub fn copy_records(from: &dyn StoreBackend, to: &dyn StoreBackend) -> Result<usize, StoreError> {
    let room = to.max_batch_ops().clamp(1, 4096);
    let mut batch = WriteBatch::new();
    let mut digest = None;
    let mut copied = 0;
    for entry in every_record(from) {
        let (name, value) = entry?;
        if name == barrier::DIGEST_RECORD {
            digest = Some(value);
            continue;
        }
        batch.put(name, value);
        copied += 1;
        if batch.ops.len() == room {
            to.apply(std::mem::take(&mut batch))?;
        }
    }
    // A full batch was applied in the loop: the digest fits in what is left.
    if let Some(value) = digest {
        batch.put(barrier::DIGEST_RECORD, value);
        copied += 1;
    }
    if !batch.is_empty() {
        to.apply(batch)?;
    }
    to.sync()?;
    Ok(copied)
}

/// Reads pages of records on a thread of `scope` while the caller works on the page before:
/// `scan(after)` gives the page after the name `after` (the first for `None`), of at most
/// `page` records. The pages come out of the receiver in order, until one is short or fails;
/// dropping the receiver stops the reading. For passes over every record (start-up's), where
/// the engine's reading and the caller's checking or parsing would otherwise take turns.
pub fn read_ahead<'scope, E: Send + 'scope>(
    scope: &'scope std::thread::Scope<'scope, '_>,
    page: usize,
    mut scan: impl FnMut(Option<&[u8]>) -> Result<Vec<Entry>, E> + Send + 'scope,
) -> mpsc::Receiver<Result<Vec<Entry>, E>> {
    let (pages, read) = mpsc::sync_channel(2);
    scope.spawn(move || {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let next = scan(after.as_deref());
            let last = next.as_ref().map_or(true, |p| p.len() < page);
            after = next
                .as_ref()
                .ok()
                .and_then(|p| p.last())
                .map(|(name, _)| name.clone());
            if pages.send(next).is_err() || last {
                return;
            }
        }
    });
    read
}

/// Checks every record of `backend` and the digest of them all ([`Barrier::check_all`]),
/// reading ahead (at a million keys the engine's reading and the tags' checking were each
/// about half of the store's start-up check).
pub(super) fn check_every_record(
    barrier: &Barrier,
    backend: &dyn StoreBackend,
) -> Result<barrier::SetDigest, StoreError> {
    std::thread::scope(|scope| {
        let read = read_ahead(scope, CHECK_PAGE, |after| {
            backend.scan(&[], after, CHECK_PAGE)
        });
        barrier.check_all(read.into_iter().flat_map(|page| {
            let (entries, failed) = match page {
                Ok(entries) => (entries, None),
                Err(error) => (Vec::new(), Some(Err(error))),
            };
            entries.into_iter().map(Ok).chain(failed)
        }))
    })
}

/// Every record of `backend` as stored, a page at a time.
pub(super) fn every_record(
    backend: &dyn StoreBackend,
) -> impl Iterator<Item = Result<Entry, StoreError>> + '_ {
    let mut after: Option<Vec<u8>> = None;
    let mut page = std::vec::IntoIter::default();
    let mut done = false;
    std::iter::from_fn(move || {
        loop {
            if let Some(entry) = page.next() {
                let entry: Entry = entry;
                after = Some(entry.0.clone());
                return Some(Ok(entry));
            }
            if done {
                return None;
            }
            match backend.scan(&[], after.as_deref(), CHECK_PAGE) {
                Ok(entries) => {
                    done = entries.len() < CHECK_PAGE;
                    page = entries.into_iter();
                }
                Err(e) => {
                    done = true;
                    return Some(Err(e));
                }
            }
        }
    })
}
