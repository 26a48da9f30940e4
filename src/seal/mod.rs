//! The data directory's seal: passphrase → Argon2id → key-encryption key → master key.
//!
//! `seal.json` holds the Argon2id salt and parameters and the master key wrapped under the
//! passphrase-derived key. It is read before the metadata store is opened, so a wrong
//! passphrase is recognised (the wrap's GCM tag fails) without touching anything on disk.
//! The master key wraps every secret record in the store — key material, secret access keys —
//! each bound to its record's name, so a record copied over another fails to unwrap.

use crate::secret::{Secret, SecretBytes, SecretString};
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

pub const SEAL_FILE: &str = "seal.json";
const SEAL_FORMAT: u32 = 1;
const MASTER_KEY_AAD: &[u8] = b"keyhaven/seal/v1/master-key";
/// The master key's wrap in a seal whose store authenticates its records: the flag is bound to
/// the wrap, so removing it from `seal.json` makes the seal fail to open.
const MASTER_KEY_AAD_RECORDS_AUTHENTICATED: &[u8] =
    b"keyhaven/seal/v1/master-key/records-authenticated";

fn master_key_aad(records_authenticated: bool) -> &'static [u8] {
    if records_authenticated {
        MASTER_KEY_AAD_RECORDS_AUTHENTICATED
    } else {
        MASTER_KEY_AAD
    }
}
const WRAP_NONCE_LEN: usize = 12;
pub const MIN_PASSPHRASE_LEN: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the passphrase does not unseal {0} (wrong passphrase?)")]
    WrongPassphrase(PathBuf),
    #[error(
        "{0} is not an initialised Keyhaven data directory (run `keyhaven init --data-dir {0}`)"
    )]
    NotInitialised(PathBuf),
    #[error("{0} is already initialised")]
    AlreadyInitialised(PathBuf),
    #[error("the passphrase must be at least {MIN_PASSPHRASE_LEN} characters")]
    PassphraseTooShort,
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },
    #[error("seal file {path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("a sealed record failed to unwrap")]
    Unwrap,
}

/// Argon2id parameters. The defaults exceed OWASP's recommendation (m=19 MiB, t=2, p=1) and
/// follow RFC 9106's second recommended option (m=64 MiB, t=3, p=4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 4,
        }
    }
}

impl KdfParams {
    /// OWASP's floor (m=19 MiB, t=2, p=1): anything weaker is refused at unseal.
    pub const MINIMUM: KdfParams = KdfParams {
        memory_kib: 19 * 1024,
        iterations: 2,
        parallelism: 1,
    };

    fn is_at_least_minimum(&self) -> bool {
        self.memory_kib >= Self::MINIMUM.memory_kib
            && self.iterations >= Self::MINIMUM.iterations
            && self.parallelism >= Self::MINIMUM.parallelism
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct SealFile {
    format: u32,
    kdf: String,
    kdf_params: KdfParams,
    salt: String,
    wrapped_master_key: String,
    account_id: String,
    created: i64,
    /// The store has authenticated its records since this was set (at `init`, or by `keyhaven
    /// store authenticate`): a store of this directory without its digest was tampered with.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    records_authenticated: bool,
}

/// What an unsealed data directory tells the daemon.
#[derive(Debug, Clone)]
pub struct SealInfo {
    pub account_id: String,
    pub created: i64,
    pub kdf_params: KdfParams,
    /// See [`SealFile`]'s field of the same name.
    pub records_authenticated: bool,
}

/// Derives the 32-byte key-encryption key from a passphrase with Argon2id (version 0x13).
pub fn derive_kek(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
) -> Result<Secret<[u8; 32]>, argon2::Error> {
    derive_kek_keyed(passphrase, salt, params, &[], &[])
}

/// [`derive_kek`] with Argon2's optional secret value `K` and associated data `X` (RFC 9106,
/// section 3.1). The seal uses neither; they exist so that the RFC's test vector can be run
/// through the same derivation.
pub fn derive_kek_keyed(
    passphrase: &[u8],
    salt: &[u8],
    params: KdfParams,
    secret: &[u8],
    associated_data: &[u8],
) -> Result<Secret<[u8; 32]>, argon2::Error> {
    let mut builder = argon2::ParamsBuilder::new();
    builder
        .m_cost(params.memory_kib)
        .t_cost(params.iterations)
        .p_cost(params.parallelism)
        .output_len(32);
    if !associated_data.is_empty() {
        builder.data(argon2::AssociatedData::new(associated_data)?);
    }
    let params: Params = builder.build()?;
    let argon = if secret.is_empty() {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    } else {
        Argon2::new_with_secret(secret, Algorithm::Argon2id, Version::V0x13, params)?
    };
    let mut kek = Secret::new([0u8; 32]);
    argon.hash_password_into(passphrase, salt, kek.expose_mut())?;
    Ok(kek)
}

/// The master key: AES-256-GCM that wraps every secret record, each bound to its record name,
/// and the key every record's integrity tag is made with (derived from it, never stored).
pub struct MasterKey {
    /// The key schedule, for the daemon's whole life: out of core dumps and swap.
    cipher: crate::secret::Locked<Aes256Gcm>,
    record_integrity: Secret<[u8; 32]>,
}

/// What the record-integrity key is derived for: HMAC-SHA-256(master key, this label).
const RECORD_INTEGRITY_LABEL: &[u8] = b"keyhaven/seal/v1/record-integrity";

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    fn from_bytes(bytes: &[u8; 32]) -> Result<Self, SealError> {
        use hmac::Mac;
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(bytes)
            .map_err(|_| SealError::Unwrap)?;
        mac.update(RECORD_INTEGRITY_LABEL);
        let mut record_integrity = Secret::new([0u8; 32]);
        record_integrity
            .expose_mut()
            .copy_from_slice(&mac.finalize().into_bytes());
        Ok(Self {
            cipher: crate::secret::Locked::new(Aes256Gcm::new(bytes.into())),
            record_integrity,
        })
    }

    /// The key the metadata store authenticates its records with (see `store::barrier`).
    pub fn record_integrity_key(&self) -> Secret<[u8; 32]> {
        self.record_integrity.clone()
    }

    /// Wraps `secret` for the record named `record`: nonce ‖ ciphertext ‖ tag.
    pub fn wrap(&self, record: &[u8], secret: &[u8]) -> Vec<u8> {
        wrap_with(&self.cipher, record, secret)
    }

    /// Unwraps what [`wrap`](Self::wrap) made for the same record name.
    pub fn unwrap(&self, record: &[u8], wrapped: &[u8]) -> Result<SecretBytes, SealError> {
        unwrap_with(&self.cipher, record, wrapped)
    }
}

/// Wraps `secret` under `cipher`, bound to `aad`: nonce ‖ ciphertext ‖ tag.
pub fn wrap_with(cipher: &Aes256Gcm, aad: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; WRAP_NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: secret, aad })
        // AES-GCM encryption fails only for inputs beyond 64 GiB.
        .unwrap_or_default();
    let mut out = Vec::with_capacity(WRAP_NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// Unwraps what [`wrap_with`] made with the same cipher and `aad`.
pub fn unwrap_with(
    cipher: &Aes256Gcm,
    aad: &[u8],
    wrapped: &[u8],
) -> Result<SecretBytes, SealError> {
    if wrapped.len() < WRAP_NONCE_LEN + 16 {
        return Err(SealError::Unwrap);
    }
    let (nonce, sealed) = wrapped.split_at(WRAP_NONCE_LEN);
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
        .map(SecretBytes::new)
        .map_err(|_| SealError::Unwrap)
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> SealError + '_ {
    move |e| SealError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Only the daemon's user may read the data directory and the seal.
fn restrict_to_owner(path: &Path, mode: u32) -> Result<(), SealError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(path))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Whether `dir` holds a seal file.
pub fn is_initialised(dir: &Path) -> bool {
    dir.join(SEAL_FILE).exists()
}

/// A seal made in memory, to be written with [`PendingSeal::write`] once everything else the
/// new data directory needs is on disk: the seal is written last, so a failed `init` never
/// leaves a sealed directory whose root credentials were never shown.
pub struct PendingSeal {
    json: Vec<u8>,
}

/// Creates the seal of a new data directory — a random master key wrapped under the
/// passphrase — without writing it yet. Refuses a directory that already has one.
pub fn prepare(
    dir: &Path,
    passphrase: &SecretString,
    params: KdfParams,
    account_id: &str,
    now: i64,
) -> Result<(SealInfo, MasterKey, PendingSeal), SealError> {
    if passphrase.expose().chars().count() < MIN_PASSPHRASE_LEN {
        return Err(SealError::PassphraseTooShort);
    }
    let path = dir.join(SEAL_FILE);
    if path.exists() {
        return Err(SealError::AlreadyInitialised(dir.to_path_buf()));
    }
    let mut salt = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let mut master = Secret::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(master.expose_mut());
    let kek = derive_kek(passphrase.expose().as_bytes(), &salt, params).map_err(|e| {
        SealError::Damaged {
            path: path.clone(),
            message: e.to_string(),
        }
    })?;
    let kek_cipher = Aes256Gcm::new(kek.expose().into());
    let file = SealFile {
        format: SEAL_FORMAT,
        kdf: "argon2id".into(),
        kdf_params: params,
        salt: B64.encode(salt),
        wrapped_master_key: B64.encode(wrap_with(
            &kek_cipher,
            MASTER_KEY_AAD_RECORDS_AUTHENTICATED,
            master.expose(),
        )),
        account_id: account_id.to_owned(),
        created: now,
        records_authenticated: true,
    };
    let json = serde_json::to_vec_pretty(&file).map_err(|e| SealError::Damaged {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let info = SealInfo {
        account_id: file.account_id,
        created: now,
        kdf_params: params,
        records_authenticated: true,
    };
    Ok((
        info,
        MasterKey::from_bytes(master.expose())?,
        PendingSeal { json },
    ))
}

/// Makes `dir` (owner-only) if needed.
pub fn create_data_dir(dir: &Path) -> Result<(), SealError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    restrict_to_owner(dir, 0o700)
}

impl PendingSeal {
    /// The seal as `seal.json` holds it (a store shared by several daemons keeps a copy, from
    /// which each daemon's data directory is made: see `keyhaven join`).
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// A seal read from where it was kept, to be written into a data directory.
    pub fn from_json(json: Vec<u8>) -> Self {
        Self { json }
    }

    /// Writes `seal.json` atomically: beside, fsync, rename, fsync the directory.
    pub fn write(self, dir: &Path) -> Result<(), SealError> {
        create_data_dir(dir)?;
        let path = dir.join(SEAL_FILE);
        if path.exists() {
            return Err(SealError::AlreadyInitialised(dir.to_path_buf()));
        }
        write_seal(dir, &self.json)
    }
}

/// Replaces `seal.json` atomically: beside, fsync, rename, fsync the directory.
fn write_seal(dir: &Path, json: &[u8]) -> Result<(), SealError> {
    let path = dir.join(SEAL_FILE);
    crate::durable::replace_file(&path, json, 0o600).map_err(io_error(&path))
}

/// Creates and writes the seal of a new data directory in one step.
pub fn init(
    dir: &Path,
    passphrase: &SecretString,
    params: KdfParams,
    account_id: &str,
    now: i64,
) -> Result<(SealInfo, MasterKey), SealError> {
    let (info, master, pending) = prepare(dir, passphrase, params, account_id, now)?;
    pending.write(dir)?;
    Ok((info, master))
}

/// Unseals a data directory. Reads `seal.json` only; writes nothing.
pub fn unseal(dir: &Path, passphrase: &SecretString) -> Result<(SealInfo, MasterKey), SealError> {
    let (info, master, _) = unseal_file(dir, passphrase)?;
    Ok((info, MasterKey::from_bytes(master.expose())?))
}

/// Records in `seal.json`, bound to the master key's wrap, that the store authenticates its
/// records from now on (after `keyhaven store authenticate` adopted an older store).
pub fn mark_records_authenticated(dir: &Path, passphrase: &SecretString) -> Result<(), SealError> {
    let (_, master, mut file) = unseal_file(dir, passphrase)?;
    if file.records_authenticated {
        return Ok(());
    }
    let salt = B64.decode(&file.salt).map_err(|e| SealError::Damaged {
        path: dir.join(SEAL_FILE),
        message: e.to_string(),
    })?;
    let kek = derive_kek(passphrase.expose().as_bytes(), &salt, file.kdf_params).map_err(|e| {
        SealError::Damaged {
            path: dir.join(SEAL_FILE),
            message: e.to_string(),
        }
    })?;
    let kek_cipher = Aes256Gcm::new(kek.expose().into());
    file.records_authenticated = true;
    file.wrapped_master_key = B64.encode(wrap_with(
        &kek_cipher,
        MASTER_KEY_AAD_RECORDS_AUTHENTICATED,
        master.expose(),
    ));
    let json = serde_json::to_vec_pretty(&file).map_err(|e| SealError::Damaged {
        path: dir.join(SEAL_FILE),
        message: e.to_string(),
    })?;
    write_seal(dir, &json)
}

fn unseal_file(
    dir: &Path,
    passphrase: &SecretString,
) -> Result<(SealInfo, Secret<[u8; 32]>, SealFile), SealError> {
    let path = dir.join(SEAL_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SealError::NotInitialised(dir.to_path_buf()));
        }
        Err(e) => return Err(io_error(&path)(e)),
    };
    let damaged = |message: String| SealError::Damaged {
        path: path.clone(),
        message,
    };
    let file: SealFile = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if file.format != SEAL_FORMAT || file.kdf != "argon2id" {
        return Err(damaged(format!(
            "unsupported format {} / kdf {}",
            file.format, file.kdf
        )));
    }
    if !file.kdf_params.is_at_least_minimum() {
        return Err(damaged("Argon2id parameters below the minimum".into()));
    }
    let salt = B64.decode(&file.salt).map_err(|e| damaged(e.to_string()))?;
    let wrapped = B64
        .decode(&file.wrapped_master_key)
        .map_err(|e| damaged(e.to_string()))?;
    let kek = derive_kek(passphrase.expose().as_bytes(), &salt, file.kdf_params)
        .map_err(|e| damaged(e.to_string()))?;
    let kek_cipher = Aes256Gcm::new(kek.expose().into());
    let master = unwrap_with(
        &kek_cipher,
        master_key_aad(file.records_authenticated),
        &wrapped,
    )
    .map_err(|_| SealError::WrongPassphrase(dir.to_path_buf()))?;
    let master: [u8; 32] = master
        .expose()
        .as_slice()
        .try_into()
        .map_err(|_| damaged("master key has the wrong length".into()))?;
    let master = Secret::new(master);
    let info = SealInfo {
        account_id: file.account_id.clone(),
        created: file.created,
        kdf_params: file.kdf_params,
        records_authenticated: file.records_authenticated,
    };
    Ok((info, master, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams::MINIMUM
    }

    fn pass(s: &str) -> SecretString {
        SecretString::new(s.to_owned())
    }

    #[test]
    fn unseals_with_the_right_passphrase_only() {
        let dir = tempfile::tempdir().unwrap();
        let (_, master) = init(
            dir.path(),
            &pass("correct horse"),
            fast(),
            "111122223333",
            1,
        )
        .unwrap();
        let wrapped = master.wrap(b"record/a", b"secret");
        let (info, again) = unseal(dir.path(), &pass("correct horse")).unwrap();
        assert_eq!(info.account_id, "111122223333");
        assert_eq!(
            again.unwrap(b"record/a", &wrapped).unwrap().expose(),
            b"secret"
        );
        let before = fs::read(dir.path().join(SEAL_FILE)).unwrap();
        assert!(matches!(
            unseal(dir.path(), &pass("correct horsf")),
            Err(SealError::WrongPassphrase(_))
        ));
        assert_eq!(fs::read(dir.path().join(SEAL_FILE)).unwrap(), before);
    }

    #[test]
    fn a_record_moved_to_another_name_fails_to_unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let (_, master) = init(dir.path(), &pass("passphrase"), fast(), "1", 1).unwrap();
        let wrapped = master.wrap(b"material/a/1", b"key-a");
        assert!(matches!(
            master.unwrap(b"material/b/1", &wrapped),
            Err(SealError::Unwrap)
        ));
        let mut flipped = wrapped.clone();
        flipped[20] ^= 1;
        assert!(master.unwrap(b"material/a/1", &flipped).is_err());
        assert!(master.unwrap(b"material/a/1", &wrapped[..10]).is_err());
    }

    #[test]
    fn refuses_short_passphrases_double_init_and_weak_params() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            init(dir.path(), &pass("short"), fast(), "1", 1),
            Err(SealError::PassphraseTooShort)
        ));
        assert!(!is_initialised(dir.path()));
        init(dir.path(), &pass("long enough"), fast(), "1", 1).unwrap();
        assert!(matches!(
            init(dir.path(), &pass("long enough"), fast(), "1", 1),
            Err(SealError::AlreadyInitialised(_))
        ));
        let path = dir.path().join(SEAL_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let weakened = text.replace("\"iterations\": 2", "\"iterations\": 1");
        assert_ne!(text, weakened);
        fs::write(&path, weakened).unwrap();
        assert!(matches!(
            unseal(dir.path(), &pass("long enough")),
            Err(SealError::Damaged { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn the_seal_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        init(&data, &pass("passphrase"), fast(), "1", 1).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join(SEAL_FILE)), 0o600);
    }

    #[test]
    fn the_records_authenticated_flag_is_bound_to_the_wrap() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &pass("passphrase"), fast(), "1", 1).unwrap();
        let (info, _) = unseal(dir.path(), &pass("passphrase")).unwrap();
        assert!(info.records_authenticated, "a new seal says so");
        // Taken out of seal.json, the seal no longer opens.
        let path = dir.path().join(SEAL_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let stripped = text.replace(",\n  \"records_authenticated\": true", "");
        assert_ne!(text, stripped);
        fs::write(&path, stripped).unwrap();
        assert!(matches!(
            unseal(dir.path(), &pass("passphrase")),
            Err(SealError::WrongPassphrase(_))
        ));
    }

    #[test]
    fn an_older_seal_is_marked_once_its_records_are_adopted() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &pass("passphrase"), fast(), "1", 1).unwrap();
        // A seal as the release before record authentication wrote it.
        let (_, master, mut file) = unseal_file(dir.path(), &pass("passphrase")).unwrap();
        let salt = B64.decode(&file.salt).unwrap();
        let kek = derive_kek(b"passphrase", &salt, file.kdf_params).unwrap();
        let cipher = Aes256Gcm::new(kek.expose().into());
        file.records_authenticated = false;
        file.wrapped_master_key = B64.encode(wrap_with(&cipher, MASTER_KEY_AAD, master.expose()));
        write_seal(dir.path(), &serde_json::to_vec(&file).unwrap()).unwrap();
        let (info, _) = unseal(dir.path(), &pass("passphrase")).unwrap();
        assert!(!info.records_authenticated);
        mark_records_authenticated(dir.path(), &pass("passphrase")).unwrap();
        let (info, again) = unseal(dir.path(), &pass("passphrase")).unwrap();
        assert!(info.records_authenticated);
        assert_eq!(
            again.record_integrity_key().expose(),
            MasterKey::from_bytes(master.expose())
                .unwrap()
                .record_integrity_key()
                .expose()
        );
    }

    #[test]
    fn default_params_meet_owasp() {
        assert!(KdfParams::default().is_at_least_minimum());
        assert!(KdfParams::default().memory_kib >= 19 * 1024);
    }

    #[test]
    fn missing_directory_is_not_initialised() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            unseal(&dir.path().join("nope"), &pass("whatever1")),
            Err(SealError::NotInitialised(_))
        ));
    }
}
