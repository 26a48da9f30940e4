//! The key record and its state machine (SPEC, "States and transitions"):
//!
//! - `Enabled ⇄ Disabled`
//! - `Enabled | Disabled → PendingDeletion` (7–30 days)
//! - `PendingDeletion → Disabled` (cancel)
//! - `PendingDeletion → Deleted` once the deletion date has passed (a tombstone remains)
//! - keys of imported material (origin `EXTERNAL`): made in `PendingImport`;
//!   `PendingImport → Enabled` when material is imported, `Enabled | Disabled → PendingImport`
//!   when it is deleted (on request, or by the scheduler once past its `ValidTo`)

use super::KeyError;
use crate::clock::{DAY, UnixSeconds};
use crate::keystore::KeySpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

pub const MIN_PENDING_DAYS: u32 = 7;
pub const MAX_PENDING_DAYS: u32 = 30;
pub const DEFAULT_PENDING_DAYS: u32 = 30;

/// Stored by its variants' positions in binary key records: a new variant goes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyState {
    Enabled,
    Disabled,
    PendingDeletion,
    Deleted,
    /// A key of imported material that holds none (not imported yet, deleted, or expired).
    PendingImport,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "Enabled",
            KeyState::Disabled => "Disabled",
            KeyState::PendingDeletion => "PendingDeletion",
            KeyState::Deleted => "Deleted",
            KeyState::PendingImport => "PendingImport",
        }
    }
}

/// Stored by its variants' positions in binary key records: a new variant goes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RotationType {
    Initial,
    Automatic,
    OnDemand,
    /// The version reached its limit of encryptions (random 96-bit nonces, NIST SP 800-38D).
    NonceLimit,
}

impl RotationType {
    pub fn as_str(self) -> &'static str {
        match self {
            RotationType::Initial => "INITIAL",
            RotationType::Automatic => "AUTOMATIC",
            RotationType::OnDemand => "ON_DEMAND",
            RotationType::NonceLimit => "NONCE_LIMIT",
        }
    }
}

/// What a key may be used for, with AWS KMS's names. Stored by its variants' positions in
/// binary key records: a new variant goes last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyUsage {
    #[serde(rename = "ENCRYPT_DECRYPT")]
    EncryptDecrypt,
    #[serde(rename = "GENERATE_VERIFY_MAC")]
    GenerateVerifyMac,
    #[serde(rename = "SIGN_VERIFY")]
    SignVerify,
    /// ECDH with an ECC key (DeriveSharedSecret).
    #[serde(rename = "KEY_AGREEMENT")]
    KeyAgreement,
}

impl KeyUsage {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyUsage::EncryptDecrypt => "ENCRYPT_DECRYPT",
            KeyUsage::GenerateVerifyMac => "GENERATE_VERIFY_MAC",
            KeyUsage::SignVerify => "SIGN_VERIFY",
            KeyUsage::KeyAgreement => "KEY_AGREEMENT",
        }
    }
}

/// The key spec and usage of a new key, from CreateKey's `KeySpec` and `KeyUsage` (empty:
/// not given), refusing what AWS KMS refuses: an HMAC spec takes `GENERATE_VERIFY_MAC` and
/// nothing else, `SYMMETRIC_DEFAULT` takes `ENCRYPT_DECRYPT` (the default of both),
/// `RSA_*` take `SIGN_VERIFY` or `ENCRYPT_DECRYPT`, the NIST curves `SIGN_VERIFY` or
/// `KEY_AGREEMENT`, `ECC_SECG_P256K1` only `SIGN_VERIFY`.
pub fn key_spec_and_usage(spec: &str, usage: &str) -> Result<(KeySpec, KeyUsage), KeyError> {
    let known_specs = || {
        KeySpec::ALL
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let spec = match spec {
        "" => KeySpec::SymmetricDefault,
        name => KeySpec::parse(name).ok_or_else(|| {
            KeyError::Validation(format!(
                "KeySpec '{}' is not supported; supported: {}",
                super::printable_input(name),
                known_specs()
            ))
        })?,
    };
    let usage = match usage {
        "" if spec == KeySpec::SymmetricDefault => KeyUsage::EncryptDecrypt,
        "" => {
            return Err(KeyError::Validation(format!(
                "You must specify a KeyUsage value for all KMS keys except for symmetric \
                 encryption keys; KeySpec {} takes {}",
                spec.as_str(),
                if spec.is_rsa() {
                    "SIGN_VERIFY or ENCRYPT_DECRYPT"
                } else if spec.agrees_keys() {
                    "SIGN_VERIFY or KEY_AGREEMENT"
                } else if spec.is_asymmetric() {
                    "SIGN_VERIFY"
                } else {
                    "GENERATE_VERIFY_MAC"
                }
            )));
        }
        "ENCRYPT_DECRYPT" => KeyUsage::EncryptDecrypt,
        "GENERATE_VERIFY_MAC" => KeyUsage::GenerateVerifyMac,
        "SIGN_VERIFY" => KeyUsage::SignVerify,
        "KEY_AGREEMENT" => KeyUsage::KeyAgreement,
        other => {
            return Err(KeyError::Validation(format!(
                "KeyUsage '{}' is not supported; supported: ENCRYPT_DECRYPT, GENERATE_VERIFY_MAC, \
                 SIGN_VERIFY, KEY_AGREEMENT",
                super::printable_input(other)
            )));
        }
    };
    let fits = match spec {
        KeySpec::SymmetricDefault => usage == KeyUsage::EncryptDecrypt,
        KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
            usage == KeyUsage::GenerateVerifyMac
        }
        KeySpec::EccNistP256 | KeySpec::EccNistP384 | KeySpec::EccNistP521 => {
            matches!(usage, KeyUsage::SignVerify | KeyUsage::KeyAgreement)
        }
        KeySpec::EccSecgP256k1 => usage == KeyUsage::SignVerify,
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            matches!(usage, KeyUsage::SignVerify | KeyUsage::EncryptDecrypt)
        }
    };
    if !fits {
        return Err(KeyError::Validation(format!(
            "KeyUsage {} is not compatible with KeySpec {}",
            usage.as_str(),
            spec.as_str()
        )));
    }
    Ok((spec, usage))
}

fn symmetric_default() -> KeySpec {
    KeySpec::SymmetricDefault
}

fn encrypt_decrypt() -> KeyUsage {
    KeyUsage::EncryptDecrypt
}

/// One generation of a key's material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub number: u32,
    pub created: UnixSeconds,
    pub rotation_type: RotationType,
    /// Encryptions with this version may use nonce counts below this; raised in blocks, so the
    /// hot path counts in memory and the count never goes backwards across restarts.
    pub nonces_reserved: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationSchedule {
    pub enabled: bool,
    pub period_days: Option<u32>,
    pub next_rotation: Option<UnixSeconds>,
}

/// Everything the daemon knows about a key, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: Uuid,
    pub description: String,
    pub state: KeyState,
    pub created: UnixSeconds,
    pub deletion_date: Option<UnixSeconds>,
    pub pending_window_days: Option<u32>,
    pub keystore: String,
    pub origin: String,
    pub versions: Vec<KeyVersion>,
    pub tags: BTreeMap<String, String>,
    pub policy: Option<String>,
    pub rotation: RotationSchedule,
    /// When the key was last used for a cryptographic operation, and for which.
    #[serde(default)]
    pub last_used: Option<KeyUse>,
    /// What the material is; records from before key specs are AES keys.
    #[serde(default = "symmetric_default")]
    pub spec: KeySpec,
    #[serde(default = "encrypt_decrypt")]
    pub usage: KeyUsage,
    /// Keys of imported material (origin `EXTERNAL`) only.
    #[serde(default)]
    pub imported: Option<ImportedMaterial>,
}

/// The first byte of a key record in its binary form: the record's fields follow in their
/// order, in postcard's encoding (a key of one version, used once, is 75 bytes, against ~500
/// as JSON, and decodes in a quarter of the time: `cargo bench --bench crypto`). Key records
/// are the records a large store reads most, one per key not held. Enums are stored by their
/// variants' positions: a new variant goes last. Records from before this form are JSON (their
/// first byte is `{`), read as they are and written in this form at their next change.
pub const RECORD_FORM_BINARY: u8 = 0xB1;

impl KeyRecord {
    /// The record as stored: [`RECORD_FORM_BINARY`], then its fields.
    pub fn to_stored(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(128);
        out.push(RECORD_FORM_BINARY);
        postcard::to_extend(self, out).map_err(|e| format!("encode: {e}"))
    }

    /// A record as stored, in either form (see [`RECORD_FORM_BINARY`]).
    pub fn from_stored(value: &[u8]) -> Result<Self, String> {
        match value.split_first() {
            Some((&RECORD_FORM_BINARY, fields)) => match postcard::take_from_bytes(fields) {
                Ok((record, [])) => Ok(record),
                Ok((_, rest)) => Err(format!("{} bytes after its fields", rest.len())),
                Err(e) => Err(e.to_string()),
            },
            Some((b'{', _)) => serde_json::from_slice(value).map_err(|e| e.to_string()),
            Some((first, _)) => Err(format!("unknown form (first byte {first:#04x})")),
            None => Err("empty".into()),
        }
    }
}

/// The origin of keys whose material is imported (AWS KMS's name).
pub const EXTERNAL_ORIGIN: &str = "EXTERNAL";

/// What a key of imported material knows of it. The material itself is the keystore's; this
/// keeps only what later imports are checked against and when it expires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportedMaterial {
    /// A commitment to the first material imported (an AES-GCM tag its own key makes over a
    /// fixed message, computed where the material lives), so that a later import of other
    /// material is refused without the material ever being kept.
    pub commitment: Option<Vec<u8>>,
    /// Whether the keystore holds the material now.
    pub present: bool,
    /// When the material expires (`KEY_MATERIAL_EXPIRES`); `None`: it does not.
    pub valid_to: Option<UnixSeconds>,
}

/// A use of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUse {
    pub time: UnixSeconds,
    pub operation: String,
}

impl KeyRecord {
    pub fn current_version(&self) -> u32 {
        self.versions.last().map(|v| v.number).unwrap_or(0)
    }

    pub fn version(&self, number: u32) -> Option<&KeyVersion> {
        self.versions.iter().find(|v| v.number == number)
    }

    pub fn version_mut(&mut self, number: u32) -> Option<&mut KeyVersion> {
        self.versions.iter_mut().find(|v| v.number == number)
    }

    fn invalid_state(&self, operation: &str) -> KeyError {
        KeyError::InvalidState(format!(
            "{operation} is not allowed: key {} is {}",
            self.id,
            self.state.as_str()
        ))
    }

    /// Refuses an operation of one usage on a key of another, as AWS KMS does.
    pub fn require_usage(&self, usage: KeyUsage, operation: &str) -> Result<(), KeyError> {
        if self.usage == usage {
            Ok(())
        } else {
            Err(KeyError::InvalidKeyUsage(format!(
                "key {} key usage is {} which is not valid for {operation}",
                self.id,
                self.usage.as_str()
            )))
        }
    }

    /// Refuses rotation of keys that do not rotate (as AWS KMS: only symmetric encryption
    /// keys do).
    pub fn require_rotatable(&self, operation: &str) -> Result<(), KeyError> {
        if self.imported.is_some() {
            return Err(KeyError::UnsupportedOperation(format!(
                "{operation} is not supported for key {}: its material is imported (origin \
                 EXTERNAL) and Keyhaven cannot make more of it",
                self.id
            )));
        }
        if self.spec == KeySpec::SymmetricDefault {
            Ok(())
        } else {
            Err(KeyError::UnsupportedOperation(format!(
                "{operation} is not supported for key {}: {} keys do not rotate; only \
                 SYMMETRIC_DEFAULT keys do",
                self.id,
                self.spec.as_str()
            )))
        }
    }

    /// Refuses unless the key may be used for cryptographic operations.
    pub fn require_enabled(&self, operation: &str) -> Result<(), KeyError> {
        match self.state {
            KeyState::Enabled => Ok(()),
            KeyState::Disabled => Err(KeyError::Disabled(format!(
                "{operation} is not allowed: key {} is Disabled",
                self.id
            ))),
            _ => Err(self.invalid_state(operation)),
        }
    }

    /// Refuses unless the key is Enabled or Disabled (metadata changes, rotation settings).
    pub fn require_active(&self, operation: &str) -> Result<(), KeyError> {
        match self.state {
            KeyState::Enabled | KeyState::Disabled => Ok(()),
            _ => Err(self.invalid_state(operation)),
        }
    }

    pub fn enable(&mut self) -> Result<(), KeyError> {
        self.require_active("EnableKey")?;
        self.state = KeyState::Enabled;
        Ok(())
    }

    pub fn disable(&mut self) -> Result<(), KeyError> {
        self.require_active("DisableKey")?;
        self.state = KeyState::Disabled;
        Ok(())
    }

    /// `Enabled | Disabled → PendingDeletion`; returns the deletion date.
    pub fn schedule_deletion(
        &mut self,
        now: UnixSeconds,
        days: Option<u32>,
    ) -> Result<UnixSeconds, KeyError> {
        let days = days.unwrap_or(DEFAULT_PENDING_DAYS);
        if !(MIN_PENDING_DAYS..=MAX_PENDING_DAYS).contains(&days) {
            return Err(KeyError::Validation(format!(
                "PendingWindowInDays must be between {MIN_PENDING_DAYS} and {MAX_PENDING_DAYS}; got {days}"
            )));
        }
        // A key of imported material may be deleted whether it holds material or not.
        if self.state != KeyState::PendingImport {
            self.require_active("ScheduleKeyDeletion")?;
        }
        let date = now + i64::from(days) * DAY;
        self.state = KeyState::PendingDeletion;
        self.deletion_date = Some(date);
        self.pending_window_days = Some(days);
        Ok(date)
    }

    /// `PendingDeletion → Disabled`.
    pub fn cancel_deletion(&mut self) -> Result<(), KeyError> {
        if self.state != KeyState::PendingDeletion {
            return Err(self.invalid_state("CancelKeyDeletion"));
        }
        // A key of imported material without it goes back to waiting for it.
        self.state = match &self.imported {
            Some(imported) if !imported.present => KeyState::PendingImport,
            _ => KeyState::Disabled,
        };
        self.deletion_date = None;
        self.pending_window_days = None;
        Ok(())
    }

    /// Refuses unless the key's material is imported (origin `EXTERNAL`).
    pub fn require_external(&self, operation: &str) -> Result<&ImportedMaterial, KeyError> {
        self.imported.as_ref().ok_or_else(|| {
            KeyError::UnsupportedOperation(format!(
                "{operation} is not supported for key {}: its origin is {}, not EXTERNAL",
                self.id, self.origin
            ))
        })
    }

    /// `PendingImport → Enabled` with the material just imported (`commitment`).
    pub fn import_material(
        &mut self,
        commitment: Vec<u8>,
        valid_to: Option<UnixSeconds>,
    ) -> Result<(), KeyError> {
        self.require_external("ImportKeyMaterial")?;
        if self.state != KeyState::PendingImport {
            return Err(self.invalid_state("ImportKeyMaterial"));
        }
        let imported = self.imported.get_or_insert_with(Default::default);
        match &imported.commitment {
            Some(earlier) if *earlier != commitment => {
                return Err(KeyError::IncorrectKeyMaterial(format!(
                    "the key material does not match the material imported earlier into key {}",
                    self.id
                )));
            }
            Some(_) => {}
            None => imported.commitment = Some(commitment),
        }
        imported.present = true;
        imported.valid_to = valid_to;
        self.state = KeyState::Enabled;
        Ok(())
    }

    /// `Enabled | Disabled → PendingImport`: the material is gone (deleted or expired).
    pub fn remove_material(&mut self, operation: &str) -> Result<(), KeyError> {
        self.require_external(operation)?;
        self.require_active(operation)?;
        if let Some(imported) = self.imported.as_mut() {
            imported.present = false;
            imported.valid_to = None;
        }
        self.state = KeyState::PendingImport;
        Ok(())
    }

    /// Whether the keystore holds (or, mid-generation, is about to hold) material for
    /// `version`: the key is no tombstone, has that version, and, for imported material, has
    /// it now. A device object of a version the key does not hold is left over from an import
    /// cut short or a deletion, never material to keep.
    pub fn holds_version(&self, version: u32) -> bool {
        self.state != KeyState::Deleted
            && self.versions.iter().any(|v| v.number == version)
            && self.imported.as_ref().is_none_or(|i| i.present)
    }

    /// Whether imported material is past its `ValidTo` (and still held).
    pub fn material_expired(&self, now: UnixSeconds) -> bool {
        matches!(self.state, KeyState::Enabled | KeyState::Disabled)
            && self
                .imported
                .as_ref()
                .is_some_and(|i| i.present && i.valid_to.is_some_and(|t| t <= now))
    }

    /// Whether the deletion date has passed.
    pub fn deletion_due(&self, now: UnixSeconds) -> bool {
        self.state == KeyState::PendingDeletion && self.deletion_date.is_some_and(|d| d <= now)
    }

    /// Whether the key is enabled and its automatic rotation date has come.
    pub fn rotation_due(&self, now: UnixSeconds) -> bool {
        self.state == KeyState::Enabled
            && self.rotation.enabled
            && self.rotation.next_rotation.is_some_and(|n| n <= now)
    }

    /// `PendingDeletion → Deleted`, once due. The caller has destroyed the material.
    pub fn mark_deleted(&mut self, now: UnixSeconds) -> Result<(), KeyError> {
        if !self.deletion_due(now) {
            return Err(self.invalid_state("deletion"));
        }
        self.state = KeyState::Deleted;
        self.rotation = RotationSchedule::default();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(state: KeyState) -> KeyRecord {
        KeyRecord {
            id: Uuid::nil(),
            description: String::new(),
            state,
            created: 0,
            deletion_date: None,
            pending_window_days: None,
            keystore: "sealed".into(),
            origin: "AWS_KMS".into(),
            versions: vec![],
            tags: BTreeMap::new(),
            policy: None,
            rotation: RotationSchedule::default(),
            last_used: None,
            spec: KeySpec::SymmetricDefault,
            usage: KeyUsage::EncryptDecrypt,
            imported: None,
        }
    }

    use KeyState::*;

    #[test]
    fn transitions_are_exactly_the_spec() {
        // (from, operation, allowed, to)
        type Op = fn(&mut KeyRecord) -> Result<(), KeyError>;
        let ops: [(&str, Op); 4] = [
            ("enable", |k| k.enable()),
            ("disable", |k| k.disable()),
            ("schedule", |k| k.schedule_deletion(0, Some(7)).map(|_| ())),
            ("cancel", |k| k.cancel_deletion()),
        ];
        let expected = [
            (
                Enabled,
                [Some(Enabled), Some(Disabled), Some(PendingDeletion), None],
            ),
            (
                Disabled,
                [Some(Enabled), Some(Disabled), Some(PendingDeletion), None],
            ),
            (PendingDeletion, [None, None, None, Some(Disabled)]),
            (Deleted, [None, None, None, None]),
        ];
        for (from, outcomes) in expected {
            for ((name, op), outcome) in ops.iter().zip(outcomes) {
                let mut record = key(from);
                if from == PendingDeletion {
                    record.deletion_date = Some(100);
                }
                let before = record.clone();
                match (op(&mut record), outcome) {
                    (Ok(()), Some(to)) => assert_eq!(record.state, to, "{from:?} {name}"),
                    (Err(KeyError::InvalidState(_)), None) => {
                        assert_eq!(record, before, "{from:?} {name} changed the key")
                    }
                    (result, _) => panic!("{from:?} {name}: {result:?}"),
                }
            }
        }
    }

    #[test]
    fn key_specs_and_usages_are_aws_s_pairs() {
        use KeySpec::*;
        for (spec, usage, expected) in [
            ("", "", Some((SymmetricDefault, KeyUsage::EncryptDecrypt))),
            (
                "SYMMETRIC_DEFAULT",
                "",
                Some((SymmetricDefault, KeyUsage::EncryptDecrypt)),
            ),
            (
                "",
                "ENCRYPT_DECRYPT",
                Some((SymmetricDefault, KeyUsage::EncryptDecrypt)),
            ),
            (
                "HMAC_224",
                "GENERATE_VERIFY_MAC",
                Some((Hmac224, KeyUsage::GenerateVerifyMac)),
            ),
            (
                "HMAC_512",
                "GENERATE_VERIFY_MAC",
                Some((Hmac512, KeyUsage::GenerateVerifyMac)),
            ),
            ("HMAC_256", "", None),
            ("HMAC_256", "ENCRYPT_DECRYPT", None),
            ("", "GENERATE_VERIFY_MAC", None),
            ("SYMMETRIC_DEFAULT", "GENERATE_VERIFY_MAC", None),
            ("HMAC_128", "GENERATE_VERIFY_MAC", None),
            ("hmac_256", "GENERATE_VERIFY_MAC", None),
            ("HMAC_256", "SIGN_VERIFY", None),
            (
                "ECC_NIST_P256",
                "SIGN_VERIFY",
                Some((EccNistP256, KeyUsage::SignVerify)),
            ),
            ("ECC_NIST_P256", "", None),
            ("ECC_NIST_P256", "ENCRYPT_DECRYPT", None),
            ("ECC_NIST_P256", "GENERATE_VERIFY_MAC", None),
            (
                "ECC_NIST_P256",
                "KEY_AGREEMENT",
                Some((EccNistP256, KeyUsage::KeyAgreement)),
            ),
            (
                "ECC_NIST_P521",
                "KEY_AGREEMENT",
                Some((EccNistP521, KeyUsage::KeyAgreement)),
            ),
            ("ECC_SECG_P256K1", "KEY_AGREEMENT", None),
            ("RSA_2048", "KEY_AGREEMENT", None),
            (
                "RSA_3072",
                "ENCRYPT_DECRYPT",
                Some((Rsa3072, KeyUsage::EncryptDecrypt)),
            ),
            ("HMAC_256", "KEY_AGREEMENT", None),
            (
                "ECC_NIST_P521",
                "SIGN_VERIFY",
                Some((EccNistP521, KeyUsage::SignVerify)),
            ),
            (
                "ECC_SECG_P256K1",
                "SIGN_VERIFY",
                Some((EccSecgP256k1, KeyUsage::SignVerify)),
            ),
            ("ECC_SECG_P256K1", "", None),
            ("ECC_SECG_P256K1", "ENCRYPT_DECRYPT", None),
            ("ECC_NIST_P521", "GENERATE_VERIFY_MAC", None),
            (
                "RSA_2048",
                "SIGN_VERIFY",
                Some((Rsa2048, KeyUsage::SignVerify)),
            ),
            (
                "RSA_4096",
                "SIGN_VERIFY",
                Some((Rsa4096, KeyUsage::SignVerify)),
            ),
            ("RSA_3072", "", None),
            ("RSA_3072", "GENERATE_VERIFY_MAC", None),
            ("", "SIGN_VERIFY", None),
            ("HMAC_256", "SIGN_VERIFY", None),
        ] {
            match (key_spec_and_usage(spec, usage), expected) {
                (Ok(got), Some(want)) => assert_eq!(got, want, "{spec} {usage}"),
                (Err(KeyError::Validation(_)), None) => {}
                (other, _) => panic!("{spec} {usage}: {other:?}"),
            }
        }
    }

    #[test]
    fn records_from_before_key_specs_are_aes_keys() {
        let mut value = serde_json::to_value(key(Enabled)).unwrap();
        let object = value.as_object_mut().unwrap();
        object.remove("spec");
        object.remove("usage");
        let old: KeyRecord = serde_json::from_value(value).unwrap();
        assert_eq!(old.spec, KeySpec::SymmetricDefault);
        assert_eq!(old.usage, KeyUsage::EncryptDecrypt);
    }

    /// A key as the bench and most deployments hold them: one version, used once.
    fn typical() -> KeyRecord {
        let mut record = key(Enabled);
        record.id = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        record.created = 1_800_000_000;
        record.versions = vec![KeyVersion {
            number: 1,
            created: 1_800_000_000,
            rotation_type: RotationType::Initial,
            nonces_reserved: 1 << 20,
        }];
        record.last_used = Some(KeyUse {
            time: 1_800_000_100,
            operation: "Encrypt".into(),
        });
        record
    }

    #[test]
    fn records_are_stored_in_binary_and_read_back_whole() {
        let mut full = typical();
        full.description = "orders ✓".into();
        full.state = PendingDeletion;
        full.deletion_date = Some(1_900_000_000);
        full.pending_window_days = Some(7);
        full.tags.insert("team".into(), "payments".into());
        full.policy = Some(r#"{"Version":"2012-10-17","Statement":[]}"#.into());
        full.rotation = RotationSchedule {
            enabled: true,
            period_days: Some(90),
            next_rotation: Some(1_807_776_000),
        };
        full.spec = KeySpec::Rsa4096;
        full.usage = KeyUsage::KeyAgreement;
        full.imported = Some(ImportedMaterial {
            commitment: Some(vec![7; 16]),
            present: true,
            valid_to: Some(1_850_000_000),
        });
        for record in [key(Enabled), typical(), full] {
            let stored = record.to_stored().unwrap();
            assert_eq!(stored[0], RECORD_FORM_BINARY);
            assert_eq!(KeyRecord::from_stored(&stored).unwrap(), record);
            let json = serde_json::to_vec(&record).unwrap();
            assert!(
                stored.len() * 3 < json.len(),
                "{} vs {}",
                stored.len(),
                json.len()
            );
        }
    }

    #[test]
    fn records_written_as_json_are_read() {
        let record = typical();
        let json = serde_json::to_vec(&record).unwrap();
        assert_eq!(KeyRecord::from_stored(&json).unwrap(), record);
        // As the earliest releases wrote them: no spec, usage or import fields.
        let mut value = serde_json::to_value(&record).unwrap();
        for field in ["spec", "usage", "imported"] {
            value.as_object_mut().unwrap().remove(field);
        }
        let old = KeyRecord::from_stored(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert_eq!(old, record);
    }

    /// The binary form is a stored format: a field or variant moved changes these bytes.
    #[test]
    fn the_binary_form_is_pinned() {
        let stored = typical().to_stored().unwrap();
        let expected = [
            "b1",                                 // the form
            "100123456789abcdef0123456789abcdef", // id: length, bytes
            "00",                                 // description ""
            "00",                                 // state: Enabled
            "80c8ceb40d",                         // created (zigzag varint)
            "0000",                               // no deletion date, no pending window
            "067365616c6564",                     // keystore "sealed"
            "074157535f4b4d53",                   // origin "AWS_KMS"
            "01",                                 // one version:
            "0180c8ceb40d00808040",               // 1, created, Initial, 2^20 nonces reserved
            "0000",                               // no tags, no policy
            "000000",                             // rotation: off, no period, none next
            "01c8c9ceb40d07456e6372797074",       // last used: time, "Encrypt"
            "0000",                               // SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT
            "00",                                 // not imported
        ]
        .concat();
        assert_eq!(hex::encode(&stored), expected);
    }

    #[test]
    fn damaged_or_unknown_records_are_refused() {
        let stored = typical().to_stored().unwrap();
        for (bytes, says) in [
            (Vec::new(), "empty"),
            (vec![0x01, 0x02], "unknown form (first byte 0x01)"),
            (
                [stored.as_slice(), &[0]].concat(),
                "1 bytes after its fields",
            ),
            (stored[..stored.len() - 3].to_vec(), "end"),
            (b"{\"id\":".to_vec(), "EOF"),
        ] {
            let error = KeyRecord::from_stored(&bytes).unwrap_err();
            assert!(error.contains(says), "{error}");
        }
    }

    #[test]
    fn pending_window_is_7_to_30_days() {
        for days in [6, 31, 0] {
            let mut record = key(Enabled);
            assert!(matches!(
                record.schedule_deletion(0, Some(days)),
                Err(KeyError::Validation(_))
            ));
            assert_eq!(record.state, Enabled);
        }
        let mut record = key(Disabled);
        assert_eq!(record.schedule_deletion(10, None).unwrap(), 10 + 30 * DAY);
        assert_eq!(record.pending_window_days, Some(30));
        let mut record = key(Enabled);
        assert_eq!(record.schedule_deletion(10, Some(7)).unwrap(), 10 + 7 * DAY);
    }

    fn external(state: KeyState) -> KeyRecord {
        KeyRecord {
            origin: EXTERNAL_ORIGIN.into(),
            imported: Some(ImportedMaterial::default()),
            ..key(state)
        }
    }

    #[test]
    fn imported_material_moves_pending_import_and_back() {
        let mut record = external(PendingImport);
        for (name, op) in [
            (
                "enable",
                KeyRecord::enable as fn(&mut KeyRecord) -> Result<(), KeyError>,
            ),
            ("disable", KeyRecord::disable),
        ] {
            let before = record.clone();
            assert!(
                matches!(op(&mut record), Err(KeyError::InvalidState(_))),
                "{name}"
            );
            assert_eq!(record, before);
        }
        assert!(matches!(
            record.remove_material("DeleteImportedKeyMaterial"),
            Err(KeyError::InvalidState(_))
        ));
        record.import_material(vec![1; 16], Some(500)).unwrap();
        assert_eq!(record.state, Enabled);
        assert!(record.material_expired(500) && !record.material_expired(499));
        // Only from PendingImport.
        let before = record.clone();
        assert!(matches!(
            record.import_material(vec![1; 16], None),
            Err(KeyError::InvalidState(_))
        ));
        assert_eq!(record, before);
        record.disable().unwrap();
        record.remove_material("DeleteImportedKeyMaterial").unwrap();
        assert_eq!(record.state, PendingImport);
        assert!(!record.material_expired(1000));
        // Other material is refused and changes nothing; the same is taken back.
        let before = record.clone();
        assert!(matches!(
            record.import_material(vec![2; 16], None),
            Err(KeyError::IncorrectKeyMaterial(_))
        ));
        assert_eq!(record, before);
        record.import_material(vec![1; 16], None).unwrap();
        assert_eq!(record.state, Enabled);
        assert!(!record.material_expired(i64::MAX));
        // Deletion from PendingImport, and cancelling it, return there.
        let mut waiting = external(PendingImport);
        waiting.schedule_deletion(0, Some(7)).unwrap();
        waiting.cancel_deletion().unwrap();
        assert_eq!(waiting.state, PendingImport);
        // Generated keys have no imported material to handle.
        let mut generated = key(Enabled);
        assert!(matches!(
            generated.remove_material("DeleteImportedKeyMaterial"),
            Err(KeyError::UnsupportedOperation(_))
        ));
        assert!(matches!(
            external(Enabled).require_rotatable("RotateKeyOnDemand"),
            Err(KeyError::UnsupportedOperation(_))
        ));
    }

    #[test]
    fn deletion_only_once_due() {
        let mut record = key(Enabled);
        let date = record.schedule_deletion(0, Some(7)).unwrap();
        assert!(record.mark_deleted(date - 1).is_err());
        assert_eq!(record.state, PendingDeletion);
        record.mark_deleted(date).unwrap();
        assert_eq!(record.state, Deleted);
        assert_eq!(record.deletion_date, Some(date));
    }
}
