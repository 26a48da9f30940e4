//! Virtual MFA devices: a TOTP seed per device, created unassigned, enabled for one user with
//! two consecutive codes, and then asked for a code when that user wants MFA-authenticated
//! credentials.
//!
//! The seed is stored wrapped under the master key (bound to the record name
//! `iam/mfa/<device name>`, as secret access keys are) and shown only in the answer that
//! created it. Each accepted code's step is stored with the device before the code is
//! accepted, so a code is used once even across a restart. Wrong codes are counted per device:
//! after [`MAX_FAILURES`] in a row the device refuses every code, right or wrong, for
//! [`LOCKOUT_SECONDS`], which bounds guessing to a few codes per lockout whatever the caller's
//! rate. The count is kept in memory: a restart forgives it, and is itself an audited event.

use super::totp;
use crate::clock::{Clock, UnixSeconds};
use crate::seal::MasterKey;
use crate::secret::{Secret, SecretBytes, SecretString};
use crate::store::{Store, StoreError, WriteBatch};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

const DEVICE_PREFIX: &[u8] = b"iam/mfa/";
/// Seed bytes (160 bits, RFC 4226's recommendation for HMAC-SHA-1).
const SEED_BYTES: usize = 20;
/// Wrong codes in a row after which a device refuses codes for a while.
pub const MAX_FAILURES: u32 = 5;
/// How long a device refuses codes after [`MAX_FAILURES`] wrong ones.
pub const LOCKOUT_SECONDS: i64 = 300;
/// MFA devices one user may have enabled (AWS IAM: 8).
pub const MAX_DEVICES_PER_USER: usize = 8;
/// Virtual MFA devices the account may hold.
pub const MAX_VIRTUAL_DEVICES: usize = 5_000;
/// Steps either side of the current one whose code is accepted (clock drift).
const DRIFT_STEPS: i64 = 1;

/// Why an MFA device operation or a code was refused.
#[derive(Debug, thiserror::Error)]
pub enum MfaError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    InvalidCode(String),
    /// The device is enabled and must be deactivated first.
    #[error("{0}")]
    InUse(String),
    #[error("{0}")]
    Validation(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A device as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct DeviceRecord {
    name: String,
    created: UnixSeconds,
    /// The seed wrapped under the master key, base64.
    wrapped_seed: String,
    /// The user it is enabled for, with that user's unique id.
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    enabled: Option<UnixSeconds>,
    /// The step of the last code accepted: no code of that step or earlier is accepted again.
    #[serde(default)]
    last_step: Option<i64>,
}

struct Device {
    record: DeviceRecord,
    seed: Secret<Vec<u8>>,
}

/// A device as listed (never with its seed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaDeviceInfo {
    pub serial_number: String,
    pub user: Option<String>,
    pub enabled: Option<UnixSeconds>,
    pub created: UnixSeconds,
}

/// A new device, as shown once to whoever created it.
#[derive(Debug)]
pub struct NewMfaDevice {
    pub serial_number: String,
    pub base32_seed: SecretString,
    /// The `otpauth://totp/…` URI an authenticator app reads; it holds the seed.
    pub otpauth_uri: SecretString,
    /// The URI as a QR code, PNG.
    pub qr_code_png: SecretBytes,
}

/// Wrong codes in a row, and until when the device refuses codes.
#[derive(Default, Clone, Copy)]
struct Failures {
    count: u32,
    locked_until: UnixSeconds,
}

/// The account's virtual MFA devices.
pub struct MfaDevices {
    master: Arc<MasterKey>,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    partition: String,
    account_id: String,
    devices: Mutex<BTreeMap<String, Device>>,
    failures: Mutex<HashMap<String, Failures>>,
    /// Serialises changes, so that a code is checked and its step stored as one step.
    gate: tokio::sync::Mutex<()>,
    /// The store's view when the gate was taken: a device another daemon sharing the store
    /// changed since (a code accepted there) is not written over.
    gate_view: std::sync::atomic::AtomicI64,
}

fn record_name(device: &str) -> Vec<u8> {
    let mut name = DEVICE_PREFIX.to_vec();
    name.extend_from_slice(device.as_bytes());
    name
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// The URI as a QR code: black modules on white, 4 pixels a module, the 4-module quiet zone
/// readers need.
fn qr_png(uri: &str) -> Result<SecretBytes, String> {
    const SCALE: usize = 4;
    const QUIET: usize = 4;
    let qr = qrcode::QrCode::new(uri.as_bytes()).map_err(|e| e.to_string())?;
    let modules = qr.width();
    let colors = qr.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = Secret::new(vec![0xffu8; side * side]);
    for (index, color) in colors.iter().enumerate() {
        if *color == qrcode::Color::Dark {
            let (x, y) = (
                (index % modules + QUIET) * SCALE,
                (index / modules + QUIET) * SCALE,
            );
            for dy in 0..SCALE {
                let row = (y + dy) * side;
                pixels.expose_mut()[row + x..row + x + SCALE].fill(0);
            }
        }
    }
    let mut out = SecretBytes::new(Vec::new());
    {
        let mut encoder = png::Encoder::new(out.expose_mut(), side as u32, side as u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        writer
            .write_image_data(pixels.expose())
            .map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

impl MfaDevices {
    /// Loads and unwraps every device.
    pub fn open(
        master: Arc<MasterKey>,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        partition: &str,
        account_id: &str,
    ) -> Result<Self, StoreError> {
        let devices = Self::load(&master, &store)?;
        Ok(Self {
            master,
            store,
            clock,
            partition: partition.to_owned(),
            account_id: account_id.to_owned(),
            devices: Mutex::new(devices),
            failures: Mutex::new(HashMap::new()),
            gate: tokio::sync::Mutex::new(()),
            gate_view: std::sync::atomic::AtomicI64::new(0),
        })
    }

    /// Reads every device again (another daemon sharing the store changed one).
    pub fn reload(&self) -> Result<(), StoreError> {
        let devices = Self::load(&self.master, &self.store)?;
        *self
            .devices
            .lock()
            .map_err(|_| StoreError("MFA device lock poisoned".into()))? = devices;
        Ok(())
    }

    /// Whether the store record `name` is an MFA device's.
    pub fn holds(name: &[u8]) -> bool {
        name.starts_with(DEVICE_PREFIX)
    }

    fn load(master: &MasterKey, store: &Store) -> Result<BTreeMap<String, Device>, StoreError> {
        let mut devices = BTreeMap::new();
        for (name, value) in store.scan(DEVICE_PREFIX, None, usize::MAX)? {
            let label = String::from_utf8_lossy(&name).into_owned();
            let record: DeviceRecord = serde_json::from_slice(&value)
                .map_err(|e| StoreError(format!("{label} is damaged: {e}")))?;
            let wrapped = B64
                .decode(&record.wrapped_seed)
                .map_err(|e| StoreError(format!("{label} is damaged: {e}")))?;
            let seed = master
                .unwrap(&name, &wrapped)
                .map_err(|_| StoreError(format!("{label}: failed to unwrap")))?;
            let seed = Secret::new(seed.expose().clone());
            devices.insert(record.name.clone(), Device { record, seed });
        }
        Ok(devices)
    }

    /// `arn:<partition>:iam::<account>:mfa/<name>`.
    pub fn serial_number(&self, name: &str) -> String {
        format!("arn:{}:iam::{}:mfa/{name}", self.partition, self.account_id)
    }

    /// The device name a serial number of this account names.
    fn device_name<'a>(&self, serial: &'a str) -> Result<&'a str, MfaError> {
        let prefix = format!("arn:{}:iam::{}:mfa/", self.partition, self.account_id);
        serial
            .strip_prefix(&prefix)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                MfaError::NotFound(format!(
                    "no MFA device with serial number {}",
                    crate::keys::printable_input(serial)
                ))
            })
    }

    /// Takes the gate, noting the store's view the change reads at.
    async fn lock_gate(&self) -> tokio::sync::MutexGuard<'_, ()> {
        let gate = self.gate.lock().await;
        self.gate_view
            .store(self.store.view(), std::sync::atomic::Ordering::Release);
        gate
    }

    async fn write(&self, record: &DeviceRecord) -> Result<(), MfaError> {
        let mut batch = WriteBatch::new();
        let value = serde_json::to_vec(record).map_err(|e| StoreError(e.to_string()))?;
        batch.put(record_name(&record.name), value);
        self.commit_guarded(batch, &record.name).await
    }

    /// Commits a change to the device `name`, unless another daemon sharing the store changed
    /// it since the gate was taken (then a code it accepted there is refused here).
    async fn commit_guarded(&self, mut batch: WriteBatch, name: &str) -> Result<(), MfaError> {
        let view = self.gate_view.load(std::sync::atomic::Ordering::Acquire);
        if lock(&self.devices).contains_key(name) {
            batch.require_present_unchanged(record_name(name), view);
        } else {
            batch.require_unchanged(record_name(name), view);
        }
        match self.store.try_commit(batch).await {
            Ok(()) => Ok(()),
            Err(crate::store::CommitError::Stale) => Err(MfaError::InvalidCode(
                "the MFA device changed on another daemon at the same moment (the code used \
                 there?); try again with the next code"
                    .into(),
            )),
            Err(error) => Err(StoreError::from(error).into()),
        }
    }

    /// A new, unassigned virtual device named `name` (validated by the caller).
    pub async fn create(&self, name: &str) -> Result<NewMfaDevice, MfaError> {
        let mut raw = [0u8; SEED_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let seed = Secret::new(raw.to_vec());
        zeroize::Zeroize::zeroize(&mut raw);
        let base32 = SecretString::new(data_encoding::BASE32_NOPAD.encode(seed.expose()));
        let label = format!("Keyhaven:{name}@{}", self.account_id);
        let uri = SecretString::new(format!(
            "otpauth://totp/{}?secret={}&issuer=Keyhaven&algorithm=SHA1&digits={}&period={}",
            percent_encoding::utf8_percent_encode(&label, percent_encoding::NON_ALPHANUMERIC),
            base32.expose(),
            totp::DIGITS,
            totp::STEP_SECONDS
        ));
        let qr_code_png = qr_png(uri.expose()).map_err(|e| StoreError(e.to_string()))?;
        let name_bytes = record_name(name);
        let record = DeviceRecord {
            name: name.to_owned(),
            created: self.clock.now(),
            wrapped_seed: B64.encode(self.master.wrap(&name_bytes, seed.expose())),
            user: None,
            user_id: None,
            enabled: None,
            last_step: None,
        };
        let _gate = self.lock_gate().await;
        {
            let devices = lock(&self.devices);
            if devices.contains_key(name) {
                return Err(MfaError::AlreadyExists(format!(
                    "the MFA device '{name}' already exists"
                )));
            }
            if devices.len() >= MAX_VIRTUAL_DEVICES {
                return Err(MfaError::LimitExceeded(format!(
                    "the account already has the most virtual MFA devices it may hold \
                     ({MAX_VIRTUAL_DEVICES})"
                )));
            }
        }
        self.write(&record).await?;
        lock(&self.devices).insert(name.to_owned(), Device { record, seed });
        Ok(NewMfaDevice {
            serial_number: self.serial_number(name),
            base32_seed: base32,
            otpauth_uri: uri,
            qr_code_png,
        })
    }

    fn info(&self, record: &DeviceRecord) -> MfaDeviceInfo {
        MfaDeviceInfo {
            serial_number: self.serial_number(&record.name),
            user: record.user.clone(),
            enabled: record.enabled,
            created: record.created,
        }
    }

    /// Every virtual device, or those enabled for `user` when given.
    pub fn list(&self, user: Option<&str>) -> Vec<MfaDeviceInfo> {
        lock(&self.devices)
            .values()
            .filter(|d| user.is_none() || d.record.user.as_deref() == user)
            .map(|d| self.info(&d.record))
            .collect()
    }

    /// The device a serial number names, with its seed (a copy) and record.
    fn device(&self, serial: &str) -> Result<(DeviceRecord, Secret<Vec<u8>>), MfaError> {
        let name = self.device_name(serial)?;
        lock(&self.devices)
            .get(name)
            .map(|d| (d.record.clone(), Secret::new(d.seed.expose().clone())))
            .ok_or_else(|| {
                MfaError::NotFound(format!(
                    "no MFA device with serial number {}",
                    crate::keys::printable_input(serial)
                ))
            })
    }

    /// Refuses while the device is locked out after wrong codes.
    fn check_not_locked(&self, name: &str, now: UnixSeconds) -> Result<(), MfaError> {
        let failures = lock(&self.failures).get(name).copied().unwrap_or_default();
        if failures.locked_until > now {
            return Err(MfaError::InvalidCode(format!(
                "too many wrong codes for this MFA device; it accepts codes again in {} seconds",
                failures.locked_until - now
            )));
        }
        Ok(())
    }

    fn count_failure(&self, name: &str, now: UnixSeconds) {
        let mut failures = lock(&self.failures);
        let entry = failures.entry(name.to_owned()).or_default();
        if entry.locked_until <= now && entry.count >= MAX_FAILURES {
            entry.count = 0;
        }
        entry.count += 1;
        if entry.count >= MAX_FAILURES {
            entry.locked_until = now + LOCKOUT_SECONDS;
            tracing::warn!(
                device = name,
                "an MFA device is locked out after wrong codes"
            );
        }
    }

    /// Stores the device after a code was accepted, and forgives its wrong codes.
    async fn store_accepted(&self, record: DeviceRecord) -> Result<(), MfaError> {
        self.write(&record).await?;
        let name = record.name.clone();
        lock(&self.failures).remove(&name);
        if let Some(device) = lock(&self.devices).get_mut(&name) {
            device.record = record;
        }
        Ok(())
    }

    /// Enables the device for `user` (whose unique id is `user_id`) with two codes of
    /// consecutive steps, the second no older than the previous step.
    pub async fn enable(
        &self,
        user: &str,
        user_id: &str,
        serial: &str,
        code1: &str,
        code2: &str,
    ) -> Result<(), MfaError> {
        for code in [code1, code2] {
            if code.len() != totp::DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
                return Err(MfaError::Validation(format!(
                    "an authentication code is {} digits",
                    totp::DIGITS
                )));
            }
        }
        let _gate = self.lock_gate().await;
        let (mut record, seed) = self.device(serial)?;
        if let Some(owner) = &record.user {
            return Err(MfaError::AlreadyExists(format!(
                "the MFA device {serial} is already enabled for user '{owner}'"
            )));
        }
        let enabled_for_user = lock(&self.devices)
            .values()
            .filter(|d| d.record.user.as_deref() == Some(user))
            .count();
        if enabled_for_user >= MAX_DEVICES_PER_USER {
            return Err(MfaError::LimitExceeded(format!(
                "user '{user}' already has {MAX_DEVICES_PER_USER} MFA devices"
            )));
        }
        let now = self.clock.now();
        self.check_not_locked(&record.name, now)?;
        let current = totp::step_at(now);
        let accepted = (current - DRIFT_STEPS..=current + DRIFT_STEPS).find(|&second| {
            totp::matches(seed.expose(), second - 1, code1)
                && totp::matches(seed.expose(), second, code2)
                && record.last_step.is_none_or(|last| second - 1 > last)
        });
        let Some(step) = accepted else {
            self.count_failure(&record.name, now);
            return Err(MfaError::InvalidCode(
                "the authentication codes are not two consecutive current codes of the device"
                    .into(),
            ));
        };
        record.user = Some(user.to_owned());
        record.user_id = Some(user_id.to_owned());
        record.enabled = Some(now);
        record.last_step = Some(step);
        self.store_accepted(record).await
    }

    /// Checks `code` of the device `serial`, which must be enabled for `user`; accepts it once
    /// (its step is stored before this returns) and answers when.
    pub async fn verify(
        &self,
        user: &str,
        user_id: &str,
        serial: &str,
        code: &str,
    ) -> Result<UnixSeconds, MfaError> {
        let _gate = self.lock_gate().await;
        let not_theirs = || {
            MfaError::InvalidCode(format!(
                "{} is not an MFA device enabled for the caller",
                crate::keys::printable_input(serial)
            ))
        };
        let (mut record, seed) = self.device(serial).map_err(|_| not_theirs())?;
        if record.user.as_deref() != Some(user) || record.user_id.as_deref() != Some(user_id) {
            return Err(not_theirs());
        }
        let now = self.clock.now();
        self.check_not_locked(&record.name, now)?;
        let current = totp::step_at(now);
        let matched = (current - DRIFT_STEPS..=current + DRIFT_STEPS)
            .find(|&s| totp::matches(seed.expose(), s, code));
        let step = match matched {
            Some(step) if record.last_step.is_none_or(|last| step > last) => step,
            Some(_) => {
                self.count_failure(&record.name, now);
                return Err(MfaError::InvalidCode(
                    "this authentication code was already used; wait for the next one".into(),
                ));
            }
            None => {
                self.count_failure(&record.name, now);
                return Err(MfaError::InvalidCode(
                    "the authentication code is not a current code of the device".into(),
                ));
            }
        };
        record.last_step = Some(step);
        self.store_accepted(record).await?;
        Ok(now)
    }

    /// Detaches the device from `user`; it stays, unassigned, until deleted.
    pub async fn deactivate(&self, user: &str, serial: &str) -> Result<(), MfaError> {
        let _gate = self.lock_gate().await;
        let (mut record, _) = self.device(serial)?;
        if record.user.as_deref() != Some(user) {
            return Err(MfaError::NotFound(format!(
                "the MFA device {} is not enabled for user '{user}'",
                crate::keys::printable_input(serial)
            )));
        }
        record.user = None;
        record.user_id = None;
        record.enabled = None;
        self.write(&record).await?;
        if let Some(device) = lock(&self.devices).get_mut(&record.name) {
            device.record = record;
        }
        Ok(())
    }

    /// Deletes an unassigned device and its seed.
    pub async fn delete(&self, serial: &str) -> Result<(), MfaError> {
        let _gate = self.lock_gate().await;
        let (record, _) = self.device(serial)?;
        if let Some(user) = &record.user {
            return Err(MfaError::InUse(format!(
                "the MFA device is enabled for user '{user}'; deactivate it first"
            )));
        }
        let mut batch = WriteBatch::new();
        batch.delete(record_name(&record.name));
        self.commit_guarded(batch, &record.name).await?;
        lock(&self.devices).remove(&record.name);
        lock(&self.failures).remove(&record.name);
        Ok(())
    }

    /// Whether `user` has a device enabled (a user with one cannot be deleted, as in AWS).
    pub fn has_devices(&self, user: &str) -> bool {
        lock(&self.devices)
            .values()
            .any(|d| d.record.user.as_deref() == Some(user))
    }
}
