//! Epoch keys: what the sealed keystore wraps key material under, kept outside the metadata
//! store so that forgetting one is real.
//!
//! A record removed from sled stays in its log until the space is reused, so deleting a
//! material record alone does not destroy the material: the master key would still unwrap the
//! copy in the log. Material is therefore wrapped under an *epoch key*, and the epoch keys live
//! in `keyring.json` beside the seal (each wrapped under the master key, bound to its epoch
//! number), a file rewritten whole on every change. Destroying material retires the epoch it
//! was wrapped under: a new epoch becomes current, every live record is re-wrapped under it,
//! and the keyring is rewritten without the old epoch. From then on no file under the data
//! directory holds anything that unwraps the destroyed material's wrap, wherever a copy of the
//! wrap itself survives; `keyhaven store compact` removes those copies too.
//!
//! On a store several daemons share (etcd), every daemon must unwrap what any of them wrapped,
//! so the keyring is a record of that store ([`KEYRING_RECORD`], the same JSON, its epoch keys
//! wrapped under the master key as in the file) instead of a file. A daemon that changes it
//! does so only if nobody changed it since it read it; the others read it again as soon as
//! they hear of the change, and a batch carrying material wrapped under an epoch is applied
//! only if the keyring did not change since that epoch was chosen (see `SealedKeyStore`). A
//! retired epoch key is then gone from the current record at once, and from etcd's history
//! once the cluster is compacted: destruction on etcd is complete at its next compaction.

use crate::seal::MasterKey;
use crate::secret::Secret;
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const KEYRING_FILE: &str = "keyring.json";
/// The keyring's record on a shared store.
pub const KEYRING_RECORD: &[u8] = b"keystore/sealed/keyring";
const FORMAT: u32 = 1;

#[derive(Debug, thiserror::Error)]
#[error("keyring {path}: {message}")]
pub struct KeyringError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    format: u32,
    current: u32,
    epochs: Vec<StoredEpoch>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredEpoch {
    id: u32,
    wrapped: String,
    /// Being retired: its records are re-wrapped under the current epoch, then it is dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    retiring: bool,
}

/// One epoch's key, unwrapped. `uses` is cloned into every batch that carries a record wrapped
/// under it, so retirement can wait until those are in the store (or never will be).
pub struct Epoch {
    pub id: u32,
    pub cipher: Aes256Gcm,
    pub uses: Arc<()>,
    wrapped: Vec<u8>,
}

/// The epochs in memory, with the file they came from. Changes are made on a clone and
/// installed only once [`write`](Self::write) has made them durable, so memory never holds
/// an epoch the file may lack (material wrapped under it would not survive a restart).
#[derive(Clone)]
pub struct Keyring {
    path: PathBuf,
    /// On a shared store: the store, and the view the keyring was read (or last written) at.
    shared: Option<(Arc<crate::store::Store>, i64)>,
    pub current: u32,
    pub epochs: BTreeMap<u32, Arc<Epoch>>,
    retiring: BTreeSet<u32>,
}

fn aad(id: u32) -> Vec<u8> {
    format!("keyring/epoch/{id}").into_bytes()
}

impl Keyring {
    /// Reads the keyring of `dir`, or starts one with a first epoch when there is none and
    /// `may_start` (no material in the store is wrapped under an epoch).
    pub fn open_or_create(
        dir: &Path,
        master: &MasterKey,
        may_start: bool,
    ) -> Result<Self, KeyringError> {
        let path = dir.join(KEYRING_FILE);
        let error = |message: String| KeyringError {
            path: path.clone(),
            message,
        };
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !may_start {
                    return Err(error(
                        "the keyring is missing, yet the store holds material wrapped under its \
                         epoch keys: restore keyring.json from the backup this data directory \
                         came from (keyring.json and store/ are backed up together)"
                            .into(),
                    ));
                }
                let mut keyring = Self::fresh(path.clone(), master);
                keyring.write()?;
                return Ok(keyring);
            }
            Err(e) => return Err(error(e.to_string())),
        };
        Self::parse(&bytes, path, master, None)
    }

    /// Reads the keyring a shared store keeps, or starts one when there is none and
    /// `may_start`. A store moved from one machine (whose keyring is still the file of `dir`)
    /// takes that file in.
    pub fn open_shared(
        store: Arc<crate::store::Store>,
        dir: &Path,
        master: &MasterKey,
        may_start: bool,
    ) -> Result<Self, KeyringError> {
        let path = PathBuf::from(String::from_utf8_lossy(KEYRING_RECORD).into_owned());
        let error = |message: String| KeyringError {
            path: path.clone(),
            message,
        };
        let view = store.view();
        match store
            .get(KEYRING_RECORD)
            .map_err(|e| error(e.to_string()))?
        {
            Some(bytes) => Self::parse(&bytes, path.clone(), master, Some((store, view))),
            None => {
                let file = dir.join(KEYRING_FILE);
                let mut keyring = if file.exists() {
                    let mut keyring = Self::open_or_create(dir, master, false)?;
                    keyring.path = path.clone();
                    keyring
                } else if may_start {
                    Self::fresh(path.clone(), master)
                } else {
                    return Err(error(
                        "the shared store keeps no keyring, yet holds material wrapped under its \
                         epoch keys"
                            .into(),
                    ));
                };
                keyring.shared = Some((store, view));
                keyring.write()?;
                // Taken in: the file must not keep epoch keys the shared keyring retires.
                if file.exists() {
                    fs::remove_file(&file)
                        .map_err(|e| error(format!("{}: {e}", file.display())))?;
                    File::open(dir)
                        .and_then(|d| d.sync_all())
                        .map_err(|e| error(format!("{}: {e}", dir.display())))?;
                }
                Ok(keyring)
            }
        }
    }

    /// Reads the keyring again, as the shared store keeps it now: at least as new as
    /// `revision`, the view it is current at.
    pub fn reread(&self, master: &MasterKey, revision: i64) -> Result<Option<Self>, KeyringError> {
        let Some((store, _)) = &self.shared else {
            return Ok(None);
        };
        let view = revision;
        let error = |message: String| KeyringError {
            path: self.path.clone(),
            message,
        };
        match store
            .get(KEYRING_RECORD)
            .map_err(|e| error(e.to_string()))?
        {
            Some(bytes) => Self::parse(
                &bytes,
                self.path.clone(),
                master,
                Some((store.clone(), view)),
            )
            .map(Some),
            None => Err(error("the keyring record is gone".into())),
        }
    }

    /// Installs `next` in `slot` unless the slot holds a keyring read at a later view (another
    /// daemon's change heard meanwhile).
    pub fn install(slot: &mut Keyring, next: Keyring) {
        if next.view() >= slot.view() {
            *slot = next;
        }
    }

    /// The view of the shared store the keyring is current at (0 for a file).
    pub fn view(&self) -> i64 {
        self.shared.as_ref().map_or(0, |(_, view)| *view)
    }

    fn parse(
        bytes: &[u8],
        path: PathBuf,
        master: &MasterKey,
        shared: Option<(Arc<crate::store::Store>, i64)>,
    ) -> Result<Self, KeyringError> {
        let error = |message: String| KeyringError {
            path: path.clone(),
            message,
        };
        let file: KeyringFile =
            serde_json::from_slice(bytes).map_err(|e| error(format!("damaged: {e}")))?;
        if file.format != FORMAT {
            return Err(error(format!("unsupported format {}", file.format)));
        }
        let mut epochs = BTreeMap::new();
        let mut retiring = BTreeSet::new();
        for stored in file.epochs {
            let wrapped = B64
                .decode(&stored.wrapped)
                .map_err(|e| error(format!("epoch {}: {e}", stored.id)))?;
            let key = master
                .unwrap(&aad(stored.id), &wrapped)
                .map_err(|_| error(format!("epoch {} does not unwrap", stored.id)))?;
            let cipher = Aes256Gcm::new_from_slice(key.expose())
                .map_err(|_| error(format!("epoch {} has a bad length", stored.id)))?;
            if stored.retiring {
                retiring.insert(stored.id);
            }
            epochs.insert(
                stored.id,
                Arc::new(Epoch {
                    id: stored.id,
                    cipher,
                    uses: Arc::new(()),
                    wrapped,
                }),
            );
        }
        if !epochs.contains_key(&file.current) {
            return Err(error(format!(
                "the current epoch {} is missing",
                file.current
            )));
        }
        Ok(Keyring {
            path,
            shared,
            current: file.current,
            epochs,
            retiring,
        })
    }

    /// A keyring of one new epoch, not written yet.
    fn fresh(path: PathBuf, master: &MasterKey) -> Self {
        let mut keyring = Keyring {
            path,
            shared: None,
            current: 0,
            epochs: BTreeMap::new(),
            retiring: BTreeSet::new(),
        };
        keyring.start_epoch(master);
        keyring
    }

    /// Makes a new epoch current (in memory; [`write`](Self::write) makes it durable).
    pub fn start_epoch(&mut self, master: &MasterKey) -> u32 {
        let id = self
            .epochs
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.current)
            + 1;
        let mut key = Secret::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.expose_mut());
        let epoch = Epoch {
            id,
            cipher: Aes256Gcm::new(key.expose().into()),
            uses: Arc::new(()),
            wrapped: master.wrap(&aad(id), key.expose()),
        };
        self.epochs.insert(id, Arc::new(epoch));
        self.current = id;
        id
    }

    pub fn current(&self) -> Option<&Arc<Epoch>> {
        self.epochs.get(&self.current)
    }

    /// Marks every epoch but the current one as retiring.
    pub fn retire_others(&mut self) {
        let current = self.current;
        self.retiring
            .extend(self.epochs.keys().copied().filter(|id| *id != current));
    }

    /// The epochs being retired.
    pub fn retiring(&self) -> impl Iterator<Item = &Arc<Epoch>> {
        self.epochs
            .values()
            .filter(|e| self.retiring.contains(&e.id))
    }

    /// Drops the retiring epochs: their keys are gone from memory and, once written, from disk.
    pub fn drop_retiring(&mut self) -> Vec<u32> {
        let gone: Vec<u32> = std::mem::take(&mut self.retiring).into_iter().collect();
        for id in &gone {
            self.epochs.remove(id);
        }
        gone
    }

    pub fn has_retiring(&self) -> bool {
        !self.retiring.is_empty()
    }

    /// Writes the keyring atomically: beside, fsync, rename, fsync the directory. The file it
    /// replaces, and with it any epoch key left out, is gone.
    ///
    /// On a shared store: one batch, applied only if no other daemon changed the keyring since
    /// it was read here.
    pub fn write(&mut self) -> Result<(), KeyringError> {
        let error = |message: String| KeyringError {
            path: self.path.clone(),
            message,
        };
        let file = KeyringFile {
            format: FORMAT,
            current: self.current,
            epochs: self
                .epochs
                .values()
                .map(|e| StoredEpoch {
                    id: e.id,
                    wrapped: B64.encode(&e.wrapped),
                    retiring: self.retiring.contains(&e.id),
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| error(e.to_string()))?;
        if let Some((store, view)) = &mut self.shared {
            let mut batch = crate::store::WriteBatch::new();
            batch.put(KEYRING_RECORD.to_vec(), json.clone());
            batch.require_unchanged(KEYRING_RECORD.to_vec(), *view);
            store.try_apply(batch).map_err(|e| match e {
                crate::store::CommitError::Stale => error(
                    "another daemon changed the keyring at the same time; nothing was written"
                        .into(),
                ),
                other => error(other.to_string()),
            })?;
            // Durable: etcd acknowledges what a quorum has on disk. The view the keyring is
            // current at: one at which the record still is what was written.
            let now = store.view();
            if store
                .get(KEYRING_RECORD)
                .map_err(|e| error(e.to_string()))?
                != Some(json)
            {
                return Err(error(
                    "another daemon changed the keyring just after this one wrote it".into(),
                ));
            }
            *view = now;
            return Ok(());
        }
        crate::durable::replace_file(&self.path, &json, 0o600)
            .map_err(|e| error(format!("{}: {e}", self.path.display())))
    }
}
