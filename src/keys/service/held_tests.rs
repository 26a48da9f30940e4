//! The key cache's unit tests (`held.rs`).

use super::super::*;
use crate::clock::SystemClock;
use crate::crypto::EncryptionContext;
use crate::keystore::sealed::SealedKeyStore;
use crate::seal::{self, KdfParams};
use crate::secret::SecretString;
use crate::store::{Barrier, SledBackend};

/// A key service on a sealed keystore and sled that holds `capacity` entries, and the
/// store it writes.
struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    service: KeyService,
}

fn harness(capacity: usize) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let passphrase = SecretString::new("key cache test".into());
    let (_, master) = seal::init(dir.path(), &passphrase, KdfParams::MINIMUM, "1", 0).unwrap();
    let backend = SledBackend::open(&dir.path().join("store")).unwrap();
    let barrier = Barrier::new(master.record_integrity_key());
    let store = Arc::new(Store::open(Arc::new(backend), barrier).unwrap());
    let sealed = SealedKeyStore::open(Arc::new(master), store.clone(), dir.path()).unwrap();
    let mut config = KeyServiceConfig::new("111122223333");
    config.key_cache = capacity;
    config.nonce_reservation_block = 100;
    let service = KeyService::open(
        config,
        Arc::new(SystemClock),
        store.clone(),
        vec![Arc::new(sealed) as Arc<dyn KeyStore>],
    )
    .unwrap();
    Harness {
        _dir: dir,
        store,
        service,
    }
}

async fn keys(service: &KeyService, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let record = service
            .create_key(String::new(), None, BTreeMap::new(), None)
            .await
            .unwrap();
        ids.push(record.id.to_string());
    }
    ids
}

fn stored(store: &Store, id: &str) -> KeyRecord {
    let id = Uuid::parse_str(id).unwrap();
    KeyRecord::from_stored(&store.get(&key_record_name(id)).unwrap().unwrap()).unwrap()
}

fn empty() -> EncryptionContext {
    EncryptionContext::new(BTreeMap::new()).unwrap()
}

fn held(service: &KeyService) -> usize {
    service.held.entries().len()
}

/// A key made without a policy stores none: GetKeyPolicy gives the account's default
/// text, and the key's policy read back from the store is the default already parsed
/// (shared, not parsed again). A key made with a policy stores it.
#[tokio::test]
async fn a_key_made_without_a_policy_stores_none_and_is_under_the_default() {
    let h = harness(1);
    let ids = keys(&h.service, 2).await;
    assert_eq!(stored(&h.store, &ids[0]).policy, None);
    assert_eq!(
        h.service.get_key_policy(&ids[0]).unwrap(),
        crate::policy::default_key_policy("keyhaven", "111122223333")
    );
    // Evicted by the second key: read back from the store.
    let id = Uuid::parse_str(&ids[0]).unwrap();
    let default = h.service.default_policy().unwrap();
    assert!(Arc::ptr_eq(&h.service.key_policy(id).policy, &default));
    let own = crate::policy::default_key_policy("keyhaven", "444455556666");
    let record = h
        .service
        .create_key(String::new(), None, BTreeMap::new(), Some(own.clone()))
        .await
        .unwrap();
    assert_eq!(stored(&h.store, &record.id.to_string()).policy, Some(own));
    assert!(!Arc::ptr_eq(
        &h.service.key_policy(record.id).policy,
        &default
    ));
}

/// Keys evicted and read back from the store answer as they did: their state, their
/// ciphertexts, a change made to them while evicted.
#[tokio::test]
async fn evicted_keys_are_read_again_and_answer_as_before() {
    let h = harness(2);
    let ids = keys(&h.service, 6).await;
    assert_eq!(held(&h.service), 2);
    let mut blobs = Vec::new();
    for id in &ids {
        blobs.push(h.service.encrypt(id, b"secret", &empty()).await.unwrap().0);
    }
    h.service.disable_key(&ids[0]).await.unwrap();
    for id in &ids[1..] {
        h.service.describe_key(id).unwrap();
    }
    assert_eq!(held(&h.service), 2, "the cache holds its capacity");
    assert_eq!(
        h.service.describe_key(&ids[0]).unwrap().state,
        KeyState::Disabled
    );
    for (id, blob) in ids.iter().zip(&blobs).skip(1) {
        let decrypted = h.service.decrypt(blob, &empty(), None).await.unwrap();
        assert_eq!(decrypted.key_id.to_string(), *id);
        assert_eq!(decrypted.plaintext.expose(), b"secret");
    }
    let error = h
        .service
        .decrypt(&blobs[0], &empty(), None)
        .await
        .unwrap_err();
    assert!(matches!(error, KeyError::Disabled(_)), "{error:?}");
    assert_eq!(h.service.count(), 6);
    assert_eq!(h.service.count_by_state()["Disabled"], 1);
    assert_eq!(h.service.list_keys(0, "").unwrap().items.len(), 6);
}

/// An entry someone holds stays, however many keys are read meanwhile: a key has one
/// entry, so one gate.
#[tokio::test]
async fn an_entry_in_use_is_never_evicted() {
    let h = harness(1);
    let ids = keys(&h.service, 4).await;
    let first = Uuid::parse_str(&ids[0]).unwrap();
    let pinned = h.service.entry_by_id(first).unwrap().unwrap();
    for id in &ids[1..] {
        h.service.describe_key(id).unwrap();
    }
    let again = h.service.entry_by_id(first).unwrap().unwrap();
    assert!(
        Arc::ptr_eq(&pinned, &again),
        "a second entry for a held key"
    );
    drop((pinned, again));
    for id in &ids[1..] {
        h.service.describe_key(id).unwrap();
    }
    assert!(h.service.held.peek(first).is_none(), "evicted once let go");
}

/// An evicted key's encryption count goes on where it stopped: read again from its
/// record alone, it would take the whole reserved block as used and write a new one.
#[tokio::test]
async fn an_evicted_keys_encryption_count_goes_on() {
    let h = harness(1);
    let ids = keys(&h.service, 2).await;
    for _ in 0..10 {
        h.service.encrypt(&ids[0], b"x", &empty()).await.unwrap();
    }
    h.service.describe_key(&ids[1]).unwrap();
    let first = Uuid::parse_str(&ids[0]).unwrap();
    assert!(h.service.held.peek(first).is_none());
    for _ in 0..10 {
        h.service.encrypt(&ids[0], b"x", &empty()).await.unwrap();
    }
    let counter = h
        .service
        .entry_by_id(first)
        .unwrap()
        .unwrap()
        .nonces()
        .unwrap();
    assert_eq!(counter.used.load(Ordering::SeqCst), 20);
    assert_eq!(
        stored(&h.store, &ids[0]).versions[0].nonces_reserved,
        100,
        "no block reserved beyond the first"
    );
}

/// After a clean stop a key's encryption count goes on where it stopped, evicted or held,
/// once: a start that did not follow a clean stop takes every reserved count as used.
#[tokio::test]
async fn a_clean_stops_encryption_counts_are_taken_once() {
    let h = harness(1);
    let ids = keys(&h.service, 3).await;
    // Two evicted already: their counters left their counts in the index, not in a map.
    assert!(super::lock(&h.service.held.parked).is_empty());
    let left = |id: &str| {
        let summary = h
            .service
            .held
            .summary(Uuid::parse_str(id).unwrap())
            .unwrap();
        (summary.unused_version, summary.unused)
    };
    assert_eq!(left(&ids[0]), (1, 100));
    for _ in 0..10 {
        h.service.encrypt(&ids[0], b"x", &empty()).await.unwrap();
    }
    assert_eq!(
        left(&ids[0]),
        (0, 0),
        "taken by the entry that read the key again"
    );
    for _ in 0..5 {
        h.service.encrypt(&ids[1], b"x", &empty()).await.unwrap();
    }
    // The first two are evicted by now (one parked counter each), the third is held.
    h.service.describe_key(&ids[2]).unwrap();
    let counts = h.service.held.counts();
    assert_eq!(counts.len(), 3, "{counts:?}");
    h.service.keep_index();
    let reopen = || {
        KeyService::open(
            h.service.config.clone(),
            Arc::new(SystemClock),
            h.store.clone(),
            h.service.keystores.values().cloned().collect(),
        )
        .unwrap()
    };
    let used = |service: &KeyService, id: &str| {
        let id = Uuid::parse_str(id).unwrap();
        let entry = service.entry_by_id(id).unwrap().unwrap();
        entry.nonces().unwrap().used.load(Ordering::SeqCst)
    };
    let reserved = |id: &str| stored(&h.store, id).versions[0].nonces_reserved;
    let after_stop = reopen();
    after_stop.encrypt(&ids[0], b"x", &empty()).await.unwrap();
    assert_eq!(used(&after_stop, &ids[0]), 11);
    assert_eq!(used(&after_stop, &ids[1]), 5);
    assert_eq!(used(&after_stop, &ids[2]), 0);
    assert_eq!(reserved(&ids[0]), 100, "no block reserved beyond the first");
    // Not stopped cleanly (nothing kept since): the counts were taken already, and the
    // open that finds them taken writes nothing.
    let counts_file = || {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(h._dir.path().join("store/aside/key-counts"))
            .unwrap()
            .ino()
    };
    let taken = counts_file();
    let after_crash = reopen();
    assert_eq!(counts_file(), taken, "the taken counts were written again");
    assert_eq!(used(&after_crash, &ids[1]), 100);
    after_crash.encrypt(&ids[1], b"x", &empty()).await.unwrap();
    assert!(reserved(&ids[1]) > 100, "a new block");
}

/// The pass that writes last uses reads back the keys evicted since they were used, and
/// leaves each next in line for eviction: of the keys calls were using, all but those the
/// pass's concurrent writers pushed out stay held.
#[tokio::test]
async fn writing_evicted_keys_last_uses_leaves_the_keys_in_use_held() {
    let capacity = super::super::usage::USE_WRITERS + 16;
    let h = harness(capacity);
    let ids = keys(&h.service, 3 * capacity).await;
    // Used, then evicted by the keys after them: their uses are parked.
    for id in &ids[..2 * capacity] {
        h.service.encrypt(id, b"x", &empty()).await.unwrap();
    }
    let in_use = &ids[2 * capacity..];
    for id in in_use {
        h.service.describe_key(id).unwrap();
    }
    let still_held = |service: &KeyService| {
        in_use
            .iter()
            .filter(|id| service.held.peek(Uuid::parse_str(id).unwrap()).is_some())
            .count()
    };
    assert_eq!(still_held(&h.service), capacity);
    h.service.record_uses().await;
    assert!(stored(&h.store, &ids[0]).last_used.is_some());
    assert!(
        still_held(&h.service) >= capacity - super::super::usage::USE_WRITERS,
        "{} of {capacity} keys in use still held",
        still_held(&h.service)
    );
}

/// Calls over many keys park a use for each key evicted: once `uses_soon` are parked, the
/// scheduler writes them without waiting for its pass (an hour away here), and the map of
/// parked uses is empty again.
#[tokio::test]
async fn many_parked_uses_are_written_before_the_schedulers_pass() {
    let mut h = harness(1);
    h.service.held.uses_soon = 4;
    // Parked uses alone call the writes here.
    h.service.held.first_uses_soon = usize::MAX;
    let ids = keys(&h.service, 6).await;
    let service = Arc::new(h.service);
    let scheduler = hourly_scheduler(&service);
    // Five used: the first four are evicted by the one after each, and park their uses.
    for id in &ids[..5] {
        service.encrypt(id, b"x", &empty()).await.unwrap();
    }
    let written = |id: &str| stored(&h.store, id).last_used.is_some();
    eventually(
        || ids[..4].iter().all(|id| written(id)),
        "the parked uses written before the pass",
    )
    .await;
    assert_eq!(
        stored(&h.store, &ids[0]).last_used.map(|u| u.operation),
        Some("Encrypt".to_owned())
    );
    assert!(super::lock(&service.held.parked).is_empty());
    // The key never used has no use written.
    assert!(!written(&ids[5]));
    scheduler.stop().await;
}

/// The scheduler, its pass an hour away: only the calls for writes soon run it here.
fn hourly_scheduler(service: &Arc<KeyService>) -> crate::background::Background {
    crate::keys::scheduler::spawn_scheduler(
        service.clone(),
        std::time::Duration::from_secs(3600),
        Arc::new(|_| {}),
        Arc::new(|| true),
    )
}

/// Waits up to 10 seconds for `done`.
async fn eventually(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not so: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Calls over many keys (a miss each): once `first_uses_soon` entries read from the store
/// are used, the scheduler writes those uses (its pass an hour away here) while the
/// entries are held, so that their eviction parks nothing to read back. A key used again
/// after its first use was written waits for the pass.
#[tokio::test]
async fn first_uses_are_written_while_their_keys_are_held() {
    let mut h = harness(8);
    h.service.held.first_uses_soon = 4;
    let ids = keys(&h.service, 16).await;
    let service = Arc::new(h.service);
    let scheduler = hourly_scheduler(&service);
    let last_use = |id: &str| stored(&h.store, id).last_used.map(|u| u.operation);
    let written = |ids: &[String]| ids.iter().all(|id| last_use(id).is_some());
    // Made last, so held: used, written, and still held.
    for id in &ids[12..] {
        service.encrypt(id, b"x", &empty()).await.unwrap();
    }
    eventually(|| written(&ids[12..]), "first uses written before the pass").await;
    let held = |id: &String| service.held.peek(Uuid::parse_str(id).unwrap()).is_some();
    assert!(ids[12..].iter().all(held), "written from the entries held");
    // Used again, by another operation: not a first use.
    let blob = service.encrypt(&ids[12], b"x", &empty()).await.unwrap().0;
    service.decrypt(&blob, &empty(), None).await.unwrap();
    // Four more keys (evicted since they were made) read and used: their uses are
    // written too, and the twelve keys evicted meanwhile park nothing.
    for id in &ids[..4] {
        service.encrypt(id, b"x", &empty()).await.unwrap();
    }
    eventually(|| written(&ids[..4]), "first uses written before the pass").await;
    for id in &ids[4..12] {
        service.describe_key(id).unwrap();
    }
    assert!(!held(&ids[12]));
    let parked: Vec<Uuid> = super::lock(&service.held.parked).keys().copied().collect();
    assert_eq!(
        parked,
        [Uuid::parse_str(&ids[12]).unwrap()],
        "only the use after"
    );
    assert_eq!(last_use(&ids[12]).as_deref(), Some("Encrypt"));
    scheduler.stop().await;
    // The pass writes the key's latest use.
    service.record_uses().await;
    assert_eq!(last_use(&ids[12]).as_deref(), Some("Decrypt"));
    assert_eq!(last_use(&ids[4]), None, "never used");
}

/// With nothing taking them (no scheduler here), the first uses noted stop at four times
/// `first_uses_soon`; the uses left out are written all the same, by the pass.
#[tokio::test]
async fn first_uses_noted_are_bounded_and_no_use_is_lost() {
    let mut h = harness(8);
    h.service.held.first_uses_soon = 2;
    let ids = keys(&h.service, 12).await;
    for id in &ids {
        h.service.encrypt(id, b"x", &empty()).await.unwrap();
    }
    assert_eq!(h.service.held.take_first_uses().len(), 8);
    h.service.record_uses().await;
    assert!(
        ids.iter()
            .all(|id| stored(&h.store, id).last_used.is_some())
    );
}

/// A use seen before the key's entry was evicted is written by the next pass.
#[tokio::test]
async fn an_evicted_keys_last_use_is_written() {
    let h = harness(1);
    let ids = keys(&h.service, 2).await;
    h.service.encrypt(&ids[0], b"x", &empty()).await.unwrap();
    h.service.describe_key(&ids[1]).unwrap();
    let first = stored(&h.store, &ids[0]);
    assert_eq!(first.last_used, None);
    assert_eq!(
        h.service.last_use(&first).map(|u| u.operation),
        Some("Encrypt".to_owned())
    );
    h.service.record_uses().await;
    let used = stored(&h.store, &ids[0]).last_used.unwrap();
    assert_eq!(used.operation, "Encrypt");
    assert!(h.service.held.take_parked_uses().is_empty());
}

/// A record read before a change to its key, installed after the change's writer let the
/// entry go, would serve the key as it was: the read is refused and made again.
#[tokio::test]
async fn a_record_read_before_a_change_is_not_installed() {
    let h = harness(1);
    let ids = keys(&h.service, 2).await;
    let first = Uuid::parse_str(&ids[0]).unwrap();
    let since = h.service.held.changes(first);
    let before = stored(&h.store, &ids[0]);
    h.service.disable_key(&ids[0]).await.unwrap();
    h.service.describe_key(&ids[1]).unwrap();
    assert!(h.service.held.peek(first).is_none());
    let installed = h.service.held.insert(first, since, |parked| {
        KeyEntry::with_parked(before, false, 0, parked)
    });
    assert!(installed.is_none(), "a stale record was installed");
    assert_eq!(
        h.service.describe_key(&ids[0]).unwrap().state,
        KeyState::Disabled
    );
}

/// The index answers for keys whose entries are not held: due dates, liveness.
#[tokio::test]
async fn the_index_follows_changes_to_keys_not_held() {
    let h = harness(1);
    let ids = keys(&h.service, 3).await;
    h.service.schedule_deletion(&ids[0], Some(7)).await.unwrap();
    h.service.describe_key(&ids[1]).unwrap();
    let first = Uuid::parse_str(&ids[0]).unwrap();
    assert!(h.service.held.peek(first).is_none());
    let now = h.service.now();
    assert!(h.service.due_keys(now).0.is_empty());
    assert_eq!(h.service.due_keys(now + 8 * DAY).0, vec![first]);
    assert_eq!(h.service.count_by_state()["PendingDeletion"], 1);
    assert_eq!(h.service.list_keys(0, "").unwrap().items.len(), 3);
}

/// The index answers the scheduler's questions as the record itself would, in every state.
#[tokio::test]
async fn a_summary_is_due_when_its_record_is() {
    let h = harness(4);
    let id = keys(&h.service, 1).await.remove(0);
    let base = (*h.service.describe_key(&id).unwrap()).clone();
    let now = 1_000_000;
    let mut checked = 0;
    for state in [
        KeyState::Enabled,
        KeyState::Disabled,
        KeyState::PendingDeletion,
        KeyState::Deleted,
        KeyState::PendingImport,
    ] {
        for date in [None, Some(now - 1), Some(now), Some(now + 1)] {
            for (enabled, present) in [(false, false), (true, true), (true, false)] {
                let mut record = base.clone();
                record.state = state;
                record.deletion_date = date;
                record.rotation.enabled = enabled;
                record.rotation.next_rotation = date;
                record.imported = Some(crate::keys::ImportedMaterial {
                    commitment: None,
                    present,
                    valid_to: date,
                });
                let summary = super::super::index::Summary::of(&record);
                assert_eq!(
                    summary.deletion_due(now),
                    record.deletion_due(now),
                    "{record:?}"
                );
                assert_eq!(
                    summary.rotation_due(now),
                    record.rotation_due(now),
                    "{record:?}"
                );
                assert_eq!(
                    summary.material_expired(now),
                    record.material_expired(now),
                    "{record:?}"
                );
                assert_eq!(summary.live(), record.state != KeyState::Deleted);
                checked += summary.deletion_due(now) as u32
                    + summary.rotation_due(now) as u32
                    + summary.material_expired(now) as u32;
            }
        }
    }
    assert!(checked > 0, "no case was due");
}

/// The index kept at shutdown is the one a pass over every record makes, and a later
/// start takes it instead; a change that may have missed the index stops it being kept.
#[tokio::test]
async fn the_kept_index_is_the_records_and_is_not_kept_after_a_missed_change() {
    let h = harness(2);
    let ids = keys(&h.service, 6).await;
    h.service.disable_key(&ids[1]).await.unwrap();
    h.service.schedule_deletion(&ids[2], Some(7)).await.unwrap();
    h.service.enable_rotation(&ids[3], None).await.unwrap();
    h.service.keep_index();
    let kept = h
        .store
        .aside(super::super::kept::INDEX_ASIDE)
        .expect("the index was kept");
    let (full, live) = KeyService::index_every_record(&h.store, &h.service.keystores).unwrap();
    assert_eq!(live, 6);
    assert_eq!(super::KeyIndex::decode(&kept).unwrap(), full);
    assert_eq!(kept, super::Held::new(full, 2, false).encode_index());
    // A later open takes it: the index it holds is the kept one.
    let reopened = KeyService::open(
        h.service.config.clone(),
        Arc::new(SystemClock),
        h.store.clone(),
        h.service.keystores.values().cloned().collect(),
    )
    .unwrap();
    assert_eq!(reopened.held.encode_index(), kept);
    assert_eq!(reopened.live_keys.load(Ordering::Acquire), 6);
    // A change whose end the index never heard of: not kept again.
    drop(h.service.index_change());
    h.service.disable_key(&ids[4]).await.unwrap();
    h.service.keep_index();
    assert_eq!(h.store.aside(super::super::kept::INDEX_ASIDE), None);
}
