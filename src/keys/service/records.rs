//! Key records read from the store: one on demand (a key whose entry is not held), or every
//! one a page at a time (start-up's index and material check, the orphan listing), never all
//! held at once.

use super::*;
use crate::store::Entry;

/// Key records read at once when every key is visited: memory for a page of them, never for
/// every key.
const RECORD_PAGE: usize = 4096;

/// Visits every key record in the store, a page at a time, each page parsed on every core
/// while the next is read (the store's reading and checking, and the parsing, are each about
/// half of a pass over a large store).
pub(super) fn for_every_record(
    store: &Store,
    mut visit: impl FnMut(&[KeyRecord]) -> Result<(), KeyError>,
) -> Result<(), KeyError> {
    std::thread::scope(|scope| {
        let read = crate::store::read_ahead(scope, RECORD_PAGE, |after| {
            store
                .scan(KEY_PREFIX, after, RECORD_PAGE)
                .map_err(KeyError::from)
        });
        for page in read {
            visit(&parse_page(&page?)?)?;
        }
        Ok(())
    })
}

fn parse_page(stored: &[Entry]) -> Result<Vec<KeyRecord>, KeyError> {
    let chunk = stored.len().div_ceil(parallelism()).max(1);
    let parsed: Vec<Result<Vec<KeyRecord>, KeyError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = stored
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(name, value)| parse_record(name, value))
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
    Ok(parsed
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}

pub(super) fn parse_record(name: &[u8], value: &[u8]) -> Result<KeyRecord, KeyError> {
    KeyRecord::from_stored(value).map_err(|e| {
        KeyError::Internal(format!(
            "key record {} is damaged: {e}",
            String::from_utf8_lossy(name)
        ))
    })
}

/// A key record as it is written (see [`crate::keys::model::RECORD_FORM_BINARY`]).
pub(super) fn stored_record(record: &KeyRecord) -> Result<Vec<u8>, KeyError> {
    record.to_stored().map_err(KeyError::Internal)
}

impl KeyService {
    /// The key's entry: held, or read from the store and held from now on.
    pub(super) fn entry_by_id(&self, id: Uuid) -> Result<Option<Arc<KeyEntry>>, KeyError> {
        for _ in 0..MAX_READ_TRIES {
            match self.held.lookup(id) {
                held::Lookup::Held(entry) => return Ok(Some(entry)),
                held::Lookup::Unknown => return Ok(None),
                held::Lookup::Absent => {}
            }
            // The count and the view first: the record read after them is at least as new.
            let since = self.held.changes(id);
            let view = self.store.view();
            let name = key_record_name(id);
            let Some(value) = self.store.get(&name)? else {
                return Ok(None);
            };
            let record = parse_record(&name, &value)?;
            if let Some(entry) = self.held.insert(id, since, |parked| {
                KeyEntry::with_parked(record, false, view, parked)
            }) {
                return Ok(Some(entry));
            }
        }
        Err(KeyError::Contended(format!(
            "key {id} kept changing while it was read; try again"
        )))
    }

    /// The key's record as held, or as stored (without holding it: for passes over many keys).
    pub(super) fn record_by_id(&self, id: Uuid) -> Result<Option<Arc<KeyRecord>>, KeyError> {
        if let Some(entry) = self.held.peek(id) {
            return Ok(Some(entry.record()));
        }
        let name = key_record_name(id);
        self.store
            .get(&name)?
            .map(|value| parse_record(&name, &value).map(Arc::new))
            .transpose()
    }

    /// Visits every key's record as stored, a page at a time.
    pub(super) fn for_every_record(
        &self,
        visit: impl FnMut(&[KeyRecord]) -> Result<(), KeyError>,
    ) -> Result<(), KeyError> {
        for_every_record(&self.store, visit)
    }
}
