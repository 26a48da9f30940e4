//! The data directory outside the serving daemon: making one (`init`, `cluster join`),
//! opening its store, the daemon's id in it, and the store's one-off changes
//! (`store authenticate`, `store migrate`).

use super::*;

/// What `init` made: the account and its root access key (shown once).
#[derive(Debug)]
pub struct Initialised {
    pub account_id: String,
    pub root: NewAccessKey,
}

pub fn init_data_dir(
    dir: &Path,
    passphrase: &SecretString,
    kdf: KdfParams,
    partition: &str,
    clock: &dyn Clock,
) -> Result<Initialised, ServerError> {
    init_with_store(dir, &StoreSettings::Sled, passphrase, kdf, partition, clock)
}

/// Opens the metadata store's engine as `store` says (sled: a compaction cut short is finished
/// or undone first).
pub fn open_backend(
    store: &StoreSettings,
    data_dir: &Path,
) -> Result<Arc<dyn StoreBackend>, StoreError> {
    Ok(match store {
        StoreSettings::Sled => {
            let store_dir = store_dir(data_dir);
            crate::store::compact::recover(&store_dir)?;
            Arc::new(SledBackend::open(&store_dir)?)
        }
        #[cfg(feature = "etcd")]
        StoreSettings::Etcd(settings) => Arc::new(EtcdBackend::connect(settings)?),
    })
}

/// Creates a data directory (the seal) and a metadata store as `store` says (the account's root
/// access key). An etcd prefix is claimed first: a second `init` on it is refused before
/// anything is written.
pub fn init_with_store(
    dir: &Path,
    store_settings: &StoreSettings,
    passphrase: &SecretString,
    kdf: KdfParams,
    partition: &str,
    clock: &dyn Clock,
) -> Result<Initialised, ServerError> {
    self_test::run()?;
    if seal::is_initialised(dir) {
        return Err(SealError::AlreadyInitialised(dir.to_path_buf()).into());
    }
    let account_id: String = {
        let mut rng = rand::rngs::OsRng;
        std::iter::once(rng.gen_range(1..=9u8))
            .chain((0..11).map(|_| rng.gen_range(0..=9u8)))
            .map(|d| char::from(b'0' + d))
            .collect()
    };
    let now = clock.now();
    let (_, master, seal) = seal::prepare(dir, passphrase, kdf, &account_id, now)?;
    #[cfg(feature = "etcd")]
    let mut shared_seal: Option<Arc<EtcdBackend>> = None;
    let backend: Arc<dyn StoreBackend> = match store_settings {
        StoreSettings::Sled => {
            let store_dir = dir.join(STORE_DIR);
            if store_dir.exists() {
                return Err(ServerError::Start(format!(
                    "{} exists but {} has no seal: remove it to start over (a previous init \
                     failed?)",
                    store_dir.display(),
                    dir.display()
                )));
            }
            seal::create_data_dir(dir)?;
            Arc::new(SledBackend::open(&store_dir).map_err(|e| ServerError::Start(e.to_string()))?)
        }
        #[cfg(feature = "etcd")]
        StoreSettings::Etcd(settings) => {
            let backend =
                EtcdBackend::connect(settings).map_err(|e| ServerError::Start(e.to_string()))?;
            backend
                .claim(&account_id)
                .map_err(|e| ServerError::Start(e.to_string()))?;
            seal::create_data_dir(dir)?;
            let backend = Arc::new(backend);
            shared_seal = Some(backend.clone());
            backend
        }
    };
    let store = Store::open(backend, Barrier::new(master.record_integrity_key()))
        .map_err(|e| ServerError::Start(e.to_string()))?;
    let (batch, root) = CredentialStore::new_root_access_key(&master, partition, &account_id, now)
        .map_err(|e| ServerError::Start(e.to_string()))?;
    store
        .commit_blocking(batch)
        .map_err(|e| ServerError::Start(e.to_string()))?;
    store.close();
    // The prefix keeps the seal for the daemons that join it (claimed above: nobody else
    // wrote one).
    #[cfg(feature = "etcd")]
    if let Some(backend) = shared_seal {
        backend
            .keep_seal(seal.json())
            .map_err(|e| ServerError::Start(e.to_string()))?;
    }
    // Last: only a directory whose root credentials exist is sealed.
    seal.write(dir)?;
    Ok(Initialised { account_id, root })
}

/// The daemons serving from the etcd prefix `store_settings` names, as `keyhaven cluster
/// status` shows them: what each said of itself when it started, whether it leads the
/// scheduler, and how long ago it last renewed its lease.
pub fn cluster_status(
    store_settings: &StoreSettings,
) -> Result<Vec<serde_json::Value>, ServerError> {
    match store_settings {
        StoreSettings::Sled => Err(ServerError::Start(
            "a cluster shares an etcd prefix: give --store etcd and its --etcd-* settings".into(),
        )),
        #[cfg(feature = "etcd")]
        StoreSettings::Etcd(settings) => {
            let backend =
                EtcdBackend::connect(settings).map_err(|e| ServerError::Start(e.to_string()))?;
            let failed = |e: StoreError| ServerError::Start(e.to_string());
            let leader = backend.leader(SCHEDULER_ROLE, None).map_err(failed)?;
            let mut daemons = Vec::new();
            for (id, details, left) in backend.daemons().map_err(failed)? {
                let said: serde_json::Value =
                    serde_json::from_str(&details).unwrap_or(serde_json::Value::Null);
                daemons.push(serde_json::json!({
                    "Id": id,
                    "Address": said["address"],
                    "AwsAddress": said["aws_address"],
                    "Version": said["version"],
                    "Process": said["process"],
                    "Started": said["started"].as_i64().map(crate::clock::rfc3339),
                    "Scheduler": leader.as_deref() == Some(id.as_str()),
                    "LastHeartbeatSecondsAgo": (crate::store::HOLD_TTL_SECONDS - left).max(0),
                }));
            }
            Ok(daemons)
        }
    }
}

/// Makes the data directory of a daemon joining an etcd prefix another daemon initialised:
/// the seal the prefix keeps, written into `dir` once the passphrase opens it. Nothing else is
/// needed: the keys, the keyring and the identities are in etcd.
pub fn join_data_dir(
    dir: &Path,
    store_settings: &StoreSettings,
    passphrase: &SecretString,
) -> Result<String, ServerError> {
    if seal::is_initialised(dir) {
        return Err(SealError::AlreadyInitialised(dir.to_path_buf()).into());
    }
    #[cfg(not(feature = "etcd"))]
    let _ = passphrase;
    match store_settings {
        StoreSettings::Sled => Err(ServerError::Start(
            "join makes a daemon of a cluster on etcd: give --store etcd and its --etcd-* \
             settings (a data directory of its own is made with `keyhaven init`)"
                .into(),
        )),
        #[cfg(feature = "etcd")]
        StoreSettings::Etcd(settings) => {
            let backend =
                EtcdBackend::connect(settings).map_err(|e| ServerError::Start(e.to_string()))?;
            let json = backend
                .kept_seal()
                .map_err(|e| ServerError::Start(e.to_string()))?
                .ok_or_else(|| {
                    ServerError::Start(format!(
                        "etcd prefix '{}' keeps no seal: initialise it first (keyhaven init \
                         --store etcd), or give the prefix it was initialised on",
                        settings.prefix
                    ))
                })?;
            drop(backend);
            seal::PendingSeal::from_json(json).write(dir)?;
            // The passphrase must open it: a daemon that cannot unseal is not made.
            match seal::unseal(dir, passphrase) {
                Ok((info, _)) => Ok(info.account_id),
                Err(error) => {
                    let _ = std::fs::remove_file(dir.join(seal::SEAL_FILE));
                    Err(error.into())
                }
            }
        }
    }
}

/// `keyhaven store authenticate`: unseals `dir` and authenticates the records of a store
/// written before records were, taking them as they are. Returns how many were adopted.
pub fn authenticate_store(dir: &Path, passphrase: &SecretString) -> Result<usize, ServerError> {
    let (info, master) = seal::unseal(dir, passphrase)?;
    if info.records_authenticated {
        return Err(ServerError::Start(format!(
            "the records of {} have been authenticated since it was made (its seal says so): a \
             store of it without its digest was tampered with; restore the data directory from \
             a backup instead",
            dir.display()
        )));
    }
    let backend =
        SledBackend::open(&store_dir(dir)).map_err(|e| ServerError::Start(e.to_string()))?;
    let adopted = Store::adopt(&backend, &Barrier::new(master.record_integrity_key()))
        .map_err(|e| ServerError::Start(e.to_string()))?;
    seal::mark_records_authenticated(dir, passphrase)?;
    Ok(adopted)
}

/// Where `keyhaven store migrate` keeps a migrated data directory's sled store.
pub const MIGRATED_STORE_DIR: &str = "store.migrated-to-etcd";

/// What `keyhaven store migrate` did.
#[derive(Debug)]
pub struct Migrated {
    /// Records copied (the barrier's digest among them).
    pub records: usize,
    /// Where the sled store now is (kept, no longer used).
    pub kept: PathBuf,
}

/// Moves the metadata of a single-node installation (sled, in `dir`) into the etcd prefix of
/// `store`, which this claims as `init` does: every record is checked first (as at a start),
/// copied as it is (authenticated under the same master key, so no record changes), and the
/// copy is opened and checked whole before the sled store is set aside as
/// [`MIGRATED_STORE_DIR`]. The seal, keyring and audit log stay in `dir`. Refused, with etcd
/// untouched, when the daemon still holds the store, the passphrase is wrong or the store
/// does not pass its checks; refused before anything is copied when the prefix is claimed.
pub fn migrate_store(
    dir: &Path,
    store: &StoreSettings,
    passphrase: &SecretString,
) -> Result<Migrated, ServerError> {
    #[cfg(feature = "etcd")]
    let StoreSettings::Etcd(settings) = store else {
        return Err(ServerError::Start(
            "store migrate moves a sled store to etcd: give --store etcd and its \
             --etcd-* settings"
                .into(),
        ));
    };
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (dir, store, passphrase);
        Err(ServerError::Start(
            "this keyhaven was built without etcd support; build with --features etcd".into(),
        ))
    }
    #[cfg(feature = "etcd")]
    {
        let start = |e: &dyn std::fmt::Display| ServerError::Start(e.to_string());
        if !seal::is_initialised(dir) {
            return Err(ServerError::Start(format!(
                "{} is not an initialised Keyhaven data directory",
                dir.display()
            )));
        }
        let kept = dir.join(MIGRATED_STORE_DIR);
        if !store_dir(dir).exists() {
            return Err(ServerError::Start(format!(
                "{} has no sled store to migrate{}",
                dir.display(),
                if kept.exists() {
                    " (it was migrated already)"
                } else {
                    ""
                }
            )));
        }
        let (info, master) = seal::unseal(dir, passphrase)?;
        let sled = open_backend(&StoreSettings::Sled, dir).map_err(|e| {
            ServerError::Start(format!(
                "cannot open the sled store of {} (stop the daemon first): {e}",
                dir.display()
            ))
        })?;
        let source = Store::open(sled.clone(), Barrier::new(master.record_integrity_key()))
            .map_err(|e| start(&e))?;
        let etcd = Arc::new(EtcdBackend::connect(settings).map_err(|e| start(&e))?);
        etcd.claim(&info.account_id).map_err(|e| start(&e))?;
        let records = crate::store::copy_records(&*sled, &*etcd).map_err(|e| {
            ServerError::Start(format!(
                "the copy to etcd prefix '{}' was cut short ({e}); it holds no digest and will \
                 not open: remove the prefix (etcdctl del --prefix {}) and migrate again",
                settings.prefix, settings.prefix
            ))
        })?;
        let target = Store::open(etcd.clone(), Barrier::new(master.record_integrity_key()))
            .map_err(|e| start(&format!("the copy in etcd does not pass its checks: {e}")))?;
        // This daemon's audit chain: its anchors under its id, as every daemon of a shared
        // store keeps them.
        let id = daemon_id(dir, true)?.ok_or_else(|| start(&"no daemon id"))?;
        let mut renamed = crate::store::WriteBatch::new();
        for (shared, own) in [
            (
                crate::audit::head_record(None),
                crate::audit::head_record(Some(&id)),
            ),
            (
                crate::audit::start_record(None),
                crate::audit::start_record(Some(&id)),
            ),
        ] {
            if let Some(value) = target.get(&shared).map_err(|e| start(&e))? {
                renamed.put(own, value);
                renamed.delete(shared);
            }
        }
        target.commit_blocking(renamed).map_err(|e| start(&e))?;
        target.close();
        drop(target);
        // The seal, for the daemons that join the prefix later.
        etcd.keep_seal(&std::fs::read(dir.join(seal::SEAL_FILE)).map_err(|e| start(&e))?)
            .map_err(|e| start(&e))?;
        drop(etcd);
        source.close();
        drop(source);
        drop(sled);
        std::fs::rename(store_dir(dir), &kept).map_err(|e| {
            ServerError::Start(format!(
                "copied, but cannot set the sled store aside as {}: {e}; move it away before \
                 serving from etcd",
                kept.display()
            ))
        })?;
        Ok(Migrated { records, kept })
    }
}

/// The file naming the daemon a data directory belongs to, among those sharing a store.
pub const DAEMON_ID_FILE: &str = "daemon-id";

/// The id of the daemon of `data_dir` (made, and kept in [`DAEMON_ID_FILE`], at its first
/// start when `make`): its name among the daemons sharing an etcd prefix, and its audit
/// chain's.
pub fn daemon_id(data_dir: &Path, make: bool) -> Result<Option<String>, ServerError> {
    let path = data_dir.join(DAEMON_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim();
            if id.is_empty()
                || id.len() > 64
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ServerError::Start(format!(
                    "{} does not hold a daemon id (1 to 64 of A-Z a-z 0-9 - _)",
                    path.display()
                )));
            }
            Ok(Some(id.to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && make => {
            let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            crate::durable::replace_file(&path, id.as_bytes(), 0o644)
                .map_err(|e| ServerError::Start(format!("{}: {e}", path.display())))?;
            Ok(Some(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ServerError::Start(format!("{}: {e}", path.display()))),
    }
}

/// The store directory inside a data directory.
pub fn store_dir(data_dir: &Path) -> PathBuf {
    data_dir.join(STORE_DIR)
}
