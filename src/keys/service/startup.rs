//! Start-up checks: every key's material against its keystore (the generation journal and
//! orphans are in `journal.rs`).

use super::*;

/// Where the start-up check of every key's material is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MaterialCheck {
    NotStarted,
    Running,
    Done,
}

/// See [`KeyService::stop_material_check_on_drop`].
pub struct StopsMaterialCheck(Option<Arc<KeyService>>);

impl StopsMaterialCheck {
    /// Lets the check run on (the start succeeded).
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for StopsMaterialCheck {
    fn drop(&mut self) {
        if let Some(keys) = self.0.take() {
            keys.stop_checking.store(true, Ordering::Release);
        }
    }
}

impl KeyService {
    /// Starts the check of every key's material ([`KeyService::check_material`]) on a blocking
    /// thread and returns at once: the daemon serves meanwhile (at a million keys the check
    /// reads every key record and material record, seconds before a first answer otherwise).
    /// A key is marked unavailable once the check reaches it; until then a call that needs its
    /// missing material is refused by the keystore with the same reason. The outcome is
    /// logged: one line when done, one error per key whose material is missing.
    pub fn check_material_in_background(self: &Arc<Self>, account: &str) {
        self.material_check.send_replace(MaterialCheck::Running);
        let (keys, account) = (self.clone(), account.to_owned());
        let started = std::time::Instant::now();
        let checking = tokio::task::spawn_blocking(move || {
            let problems = keys.check_material();
            let stopped = keys.stop_checking.load(Ordering::Acquire);
            tracing::info!(%account, keys = keys.count(), check_ms = started.elapsed().as_millis() as u64,
                missing = problems.len(), stopped, "every key's material checked");
            for (key, problem) in problems {
                tracing::error!(%key, %problem, %account, "key material missing: operations on this key will fail");
            }
            keys.material_check.send_replace(MaterialCheck::Done);
        });
        drop(checking);
    }

    /// Waits until the material check started by
    /// [`KeyService::check_material_in_background`] is done (at once if none runs).
    pub async fn material_checked(&self) {
        let mut check = self.material_check.subscribe();
        let _ = check.wait_for(|c| *c != MaterialCheck::Running).await;
    }

    /// Whether the material check started at the open is over.
    pub fn material_check_done(&self) -> bool {
        *self.material_check.borrow() == MaterialCheck::Done
    }

    /// Stops the material check at its next page (at shutdown: it reads the store, which is
    /// about to close) and waits until it has.
    pub async fn stop_material_check(&self) {
        self.stop_checking.store(true, Ordering::Release);
        self.material_checked().await;
    }

    /// A guard that stops the material check at its next page when dropped, unless disarmed
    /// (a start that fails after the check began: nothing waits for it, and it holds the
    /// store).
    pub fn stop_material_check_on_drop(self: &Arc<Self>) -> StopsMaterialCheck {
        StopsMaterialCheck(Some(self.clone()))
    }

    /// Checks every key's material against its keystore; returns the keys with missing
    /// material and marks them unavailable.
    ///
    /// A device keystore is asked for the list of its objects once, and the secret-key
    /// versions it lists are taken as there: only the others (key pairs, whose halves the
    /// list does not tell apart, and versions it does not list, which the lookup then names)
    /// are looked up one by one. One lookup per version made start-up quadratic on a software
    /// token, whose searches read every object (SoftHSM2: minutes for a few thousand keys).
    ///
    /// The records are read a page at a time: the check holds no more of them at once.
    pub fn check_material(&self) -> Vec<(Uuid, String)> {
        let listed: HashMap<String, HashSet<MaterialRef>> = self
            .keystores
            .iter()
            .filter(|(_, keystore)| keystore.blocks())
            .filter_map(|(name, keystore)| {
                let listed = keystore.list().ok()?;
                Some((name.clone(), listed.into_iter().collect()))
            })
            .collect();
        let mut problems = Vec::new();
        let read = self.for_every_record(|records| {
            if self.stop_checking.load(Ordering::Acquire) {
                return Err(KeyError::Internal("the daemon is stopping".into()));
            }
            problems.extend(self.check_records(records, &listed));
            Ok(())
        });
        if let Err(error) = read
            && !self.stop_checking.load(Ordering::Acquire)
        {
            tracing::error!(
                ?error,
                "key records could not be read to check their material"
            );
        }
        if problems.is_empty() {
            return problems;
        }
        // The daemon served while the check ran: a key deleted or changed meanwhile (its
        // material destroyed after its record was read) is looked at again as it is now.
        self.recheck_unavailable()
    }

    /// Checks again the keys marked unavailable; those whose material is back are cleared.
    pub fn recheck_unavailable(&self) -> Vec<(Uuid, String)> {
        let ids: Vec<Uuid> = self
            .unavailable
            .read()
            .map(|u| u.iter().copied().collect())
            .unwrap_or_default();
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            match self.record_by_id(id) {
                Ok(Some(record)) => records.push((*record).clone()),
                Ok(None) => {
                    if let Ok(mut unavailable) = self.unavailable.write() {
                        unavailable.remove(&id);
                    }
                }
                // Checked again next time.
                Err(error) => {
                    tracing::warn!(key = %id, ?error, "could not read the key to check it again")
                }
            }
        }
        if records.is_empty() {
            return Vec::new();
        }
        self.check_records(&records, &HashMap::new())
    }

    /// Whether the key's material was missing when last checked.
    pub fn is_unavailable(&self, id: Uuid) -> bool {
        self.unavailable
            .read()
            .map(|u| u.contains(&id))
            .unwrap_or(false)
    }

    /// Checks the keys of `records` on every core (at start-up, every key in the store),
    /// taking the secret-key versions in `listed` (by keystore) as there.
    fn check_records(
        &self,
        records: &[KeyRecord],
        listed: &HashMap<String, HashSet<MaterialRef>>,
    ) -> Vec<(Uuid, String)> {
        let chunk = records.len().div_ceil(parallelism()).max(1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = records
                .chunks(chunk)
                .map(|part| scope.spawn(move || self.check_records_here(part, listed)))
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        })
    }

    fn check_records_here(
        &self,
        records: &[KeyRecord],
        listed: &HashMap<String, HashSet<MaterialRef>>,
    ) -> Vec<(Uuid, String)> {
        let mut problems = Vec::new();
        for record in records {
            let before = problems.len();
            self.check_record(record, listed.get(&record.keystore), &mut problems);
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

    pub(super) fn check_record(
        &self,
        record: &KeyRecord,
        listed: Option<&HashSet<MaterialRef>>,
        problems: &mut Vec<(Uuid, String)>,
    ) {
        // Only a secret key is the one object of its label; a pair has two halves.
        let listed = listed.filter(|_| !record.spec.is_asymmetric());
        // A key of imported material that holds none has nothing to find.
        if record.state == KeyState::Deleted || record.imported.as_ref().is_some_and(|i| !i.present)
        {
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
            if listed.is_some_and(|listed| listed.contains(&material)) {
                continue;
            }
            if let Err(error) = keystore.check(material) {
                problems.push((record.id, format!("version {}: {error}", version.number)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::keys::service::test_device::Device;
    use crate::secret::Secret;
    use crate::store::{Barrier, SledBackend};

    /// A key service on sled whose one keystore is a blocking device.
    fn on_a_device() -> (tempfile::TempDir, Arc<Device>, Arc<KeyService>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(
                Arc::new(SledBackend::open(dir.path()).unwrap()),
                Barrier::new(Secret::new([7u8; 32])),
            )
            .unwrap(),
        );
        let device = Arc::new(Device {
            blocking: true,
            ..Device::default()
        });
        let service = KeyService::open(
            KeyServiceConfig::new("111122223333"),
            Arc::new(SystemClock),
            store,
            vec![device.clone() as Arc<dyn KeyStore>],
        )
        .unwrap();
        (dir, device, Arc::new(service))
    }

    /// At start-up a device keystore is listed once: the versions it lists are not looked up
    /// again; one it does not list is looked up (and found), one it does not hold is looked up
    /// and named missing (after a second look), its key marked unavailable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listed_versions_are_not_looked_up_one_by_one() {
        let (_dir, device, service) = on_a_device();
        let mut ids = Vec::new();
        for _ in 0..5 {
            let key = service
                .create_key(String::new(), None, BTreeMap::new(), None)
                .await
                .unwrap();
            ids.push(key.id);
        }
        let version = |id: Uuid| MaterialRef {
            key_id: id,
            version: 1,
        };
        device.unlisted.lock().unwrap().insert(version(ids[3]));
        device.held.lock().unwrap().remove(&version(ids[4]));
        device.checks.store(0, Ordering::SeqCst);

        let problems = service.check_material();
        assert_eq!(
            problems.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [ids[4]]
        );
        // The unlisted one and the missing one; the missing one once more after the pass (a
        // key changed while the check ran is looked at again as it is now).
        assert_eq!(
            device.checks.load(Ordering::SeqCst),
            3,
            "looked up one by one"
        );
        assert!(service.is_unavailable(ids[4]));
        assert!(!service.is_unavailable(ids[3]));
    }

    /// A start that fails after the check began stops it (the guard dropped armed); one that
    /// succeeds lets it run (disarmed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_start_stops_the_material_check() {
        let (_dir, device, service) = on_a_device();
        let key = service
            .create_key(String::new(), None, BTreeMap::new(), None)
            .await
            .unwrap()
            .id;
        // Unlisted, so the check would look it up.
        device.unlisted.lock().unwrap().insert(MaterialRef {
            key_id: key,
            version: 1,
        });
        service.stop_material_check_on_drop().disarm();
        assert!(!service.stop_checking.load(Ordering::Acquire));
        drop(service.stop_material_check_on_drop());
        assert!(service.stop_checking.load(Ordering::Acquire));
        // Stopped before its first page: nothing is looked up.
        device.checks.store(0, Ordering::SeqCst);
        service.check_material_in_background("111122223333");
        service.material_checked().await;
        assert_eq!(device.checks.load(Ordering::SeqCst), 0);
    }

    /// The material check runs beside the service: calls are answered while it is held up
    /// in the keystore, and what it finds missing is marked once it is done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_material_check_runs_while_calls_are_answered() {
        let (_dir, device, service) = on_a_device();
        let (kept, lost) = (
            service
                .create_key(String::new(), None, BTreeMap::new(), None)
                .await
                .unwrap()
                .id,
            service
                .create_key(String::new(), None, BTreeMap::new(), None)
                .await
                .unwrap()
                .id,
        );
        let version = |id: Uuid| MaterialRef {
            key_id: id,
            version: 1,
        };
        // Not listed, so looked up (and held up there); the other one gone.
        device.unlisted.lock().unwrap().insert(version(kept));
        device.held.lock().unwrap().remove(&version(lost));
        let hold = |held: bool| {
            *device.holding_checks.0.lock().unwrap() = held;
            device.holding_checks.1.notify_all();
        };
        hold(true);
        service.check_material_in_background("111122223333");
        let waited = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            service.material_checked(),
        )
        .await;
        assert!(waited.is_err(), "the check ended while held up");
        assert_eq!(service.describe_key(&kept.to_string()).unwrap().id, kept);
        assert!(
            !service.is_unavailable(lost),
            "marked before it was checked"
        );
        hold(false);
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            service.material_checked(),
        )
        .await
        .expect("the check ends once let go");
        assert!(service.is_unavailable(lost));
        assert!(!service.is_unavailable(kept));
    }
}
