//! Start-up checks: every key's material against its keystore (the generation journal and
//! orphans are in `journal.rs`).

use super::*;

impl KeyService {
    /// Checks every key's material against its keystore (run at start-up); returns the keys
    /// with missing material and marks them unavailable.
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
            problems.extend(self.check_records(records, &listed));
            Ok(())
        });
        if let Err(error) = read {
            tracing::error!(
                ?error,
                "key records could not be read to check their material"
            );
        }
        problems
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

    /// At start-up a device keystore is listed once: the versions it lists are not looked up
    /// again; one it does not list is looked up (and found), one it does not hold is looked up
    /// and named missing, its key marked unavailable.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listed_versions_are_not_looked_up_one_by_one() {
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
        assert_eq!(
            device.checks.load(Ordering::SeqCst),
            2,
            "looked up one by one"
        );
        assert!(service.is_unavailable(ids[4]));
        assert!(!service.is_unavailable(ids[3]));
    }
}
