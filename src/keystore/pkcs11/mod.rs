//! The PKCS#11 keystore: key material generated in a hardware security module (SoftHSM2 in
//! tests), never leaving it. Every AES-256-GCM operation is done by the device with
//! `CKM_AES_GCM`; the daemon supplies the nonce and the AAD, so blobs look the same whichever
//! keystore made them.
//!
//! Each key version is its own token object (`CKA_TOKEN`, `CKA_SENSITIVE`, not
//! `CKA_EXTRACTABLE`), labelled `keyhaven:<account>:<key id>:<version>` with `CKA_ID` = key id
//! ‖ version, so that the daemon finds it again after a restart, and tells its objects from
//! those of another daemon (another account) sharing the token. Calls block; the key service
//! runs them on blocking threads.
//!
//! Encryption and decryption use a session copy of the token object, made in the device with
//! `C_CopyObject` the first time a version is used on a connection: a device such as SoftHSM2
//! re-reads and re-checks a token object on every use, and not a session object (three times
//! the rate). The copy is `CKA_TOKEN=false` and keeps every other attribute (sensitive, not
//! extractable), so the material never leaves the device; it lives as long as the connection's
//! anchor session and is destroyed with the version. A device that refuses the copy is used
//! through the token object.
//!
//! On a SoftHSM2 token, calls that create or destroy token objects take turns with every call
//! that reads the token's object list (finding, listing, copying, using a token object), under
//! one lock per token and process; calls on session copies are not held up. SoftHSM2's file
//! object store is not safe otherwise: a search while another thread creates an object can
//! index the half-made file as a second object, and destroying that one deletes the file of
//! the first (an acknowledged key version lost at the next start), or wipes an object being
//! generated (`CKR_TEMPLATE_INCONSISTENT`). NSS's softoken takes the same lock: a key pair
//! generated there while another thread destroys an object deadlocks both inside its SQLite
//! store. Other devices, thread-safe as PKCS#11 requires of a module initialised with
//! `CKF_OS_LOCKING_OK`, are used without it.
//!
//! HMAC keys are generic secrets made in the device (`CKM_GENERIC_SECRET_KEY_GEN`, as long as
//! the spec's digest, `CKA_SENSITIVE`, not extractable, `CKA_SIGN`/`CKA_VERIFY` only) and used
//! with `CKM_SHA224_HMAC` … `CKM_SHA512_HMAC`; a token that lacks one of these is refused when
//! the key is created, and again at use, naming the mechanism.
//!
//! Imported material: the RSA wrapping key pair of an import token is generated in the
//! device (`C_GenerateKeyPair`; the private half a token object, sensitive, not extractable,
//! labelled `keyhaven-import:<account>:<token id>`), and the material is unwrapped into the
//! device with `C_UnwrapKey` as a token object like generated material (sensitive, not
//! extractable, the usual label), so that it never appears in the daemon's memory:
//! `RSAES_OAEP_SHA_256` with `CKM_RSA_PKCS_OAEP` (SHA-256, MGF1-SHA-256), where the device's
//! OAEP takes SHA-256; `RSA_AES_KEY_WRAP_SHA_256` by opening the ephemeral AES key and then
//! `CKM_AES_KEY_WRAP_PAD` (RFC 5649) in the device. A device whose OAEP takes only SHA-1
//! (SoftHSM2 2.6) opens the ephemeral key with a raw `CKM_RSA_X_509` decryption whose OAEP
//! padding the daemon removes: that ephemeral key (not the material) passes through the
//! daemon's memory, zeroized, and into the device as a session object destroyed after the
//! unwrap. On such a device `RSAES_OAEP_SHA_256` is refused, naming why.
//!
//! Signing keys are key pairs made in the device (`CKM_EC_KEY_PAIR_GEN` on the spec's named
//! curve, `CKM_RSA_PKCS_KEY_PAIR_GEN` with exponent 65537): the private key a sensitive, never
//! extractable token object that only signs, the public key a token object under the same
//! label and id (told apart by its class). The daemon hashes; the device signs the digest
//! (`CKM_ECDSA`, whose `r ‖ s` is returned as DER; `CKM_RSA_PKCS_PSS` with MGF1 of the same
//! hash and a digest-long salt; `CKM_RSA_PKCS` over the DigestInfo), so signatures are those
//! the sealed keystore makes. GetPublicKey reads `CKA_EC_POINT` or `CKA_MODULUS` and answers
//! DER SubjectPublicKeyInfo. Destruction, listing and the generation journal go by label, so
//! they take both halves of a pair. A mechanism or curve the token lacks refuses the key.
//! RSA private keys also decrypt RSAES-OAEP in the device (`CKM_RSA_PKCS_OAEP`,
//! [`Pkcs11KeyStore::decrypt_oaep`]): the keystore is not told whether an RSA key signs or
//! decrypts.
//!
//! Key-agreement keys (made for [`MaterialUse::KeyAgreement`]) are ECC pairs made the same way
//! whose private key derives (`CKA_DERIVE`) and does not sign. ECDH is `CKM_ECDH1_DERIVE` with
//! no KDF (`CKD_NULL`) and the peer's uncompressed point, into a generic-secret session
//! object: the one object whose value the daemon reads (not sensitive, extractable), since the
//! shared secret is the operation's answer. It is read and destroyed at once, under the
//! object lock as every object change is. A token lacking `CKM_EC_KEY_PAIR_GEN` or
//! `CKM_ECDH1_DERIVE` refuses such keys when they would be made, naming the mechanism.

mod asymmetric;
mod device;
mod import;
mod pairs;

pub use asymmetric::OaepHash;
pub use device::{Failure, TokenSelector, classify};

use super::{
    COMMITMENT_NONCE, EncryptionAlgorithm, GeneratedMaterial, ImportedMaterial, KeySpec, KeyStore,
    KeyStoreError, MacAlgorithm, MaterialRef, MaterialUse, SealItem, SigningAlgorithm,
    WrappingAlgorithm, WrappingKey, commitment_aad,
};
use crate::secret::{SecretBytes, SecretString};
use crate::store::WriteBatch;
use cryptoki::context::Function;
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::aead::{GcmMessageParams, GcmParams, GeneratorFunction};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType, MessageParam};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState};
use device::Device;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The prefix of PKCS#11 keystore names: `pkcs11:<name>`.
pub const PREFIX: &str = "pkcs11:";

/// How to reach one token.
#[derive(Debug, Clone)]
pub struct Pkcs11Settings {
    /// The keystore's name without the prefix (`hsm` for `pkcs11:hsm`).
    pub name: String,
    /// Path of the PKCS#11 module (`libsofthsm2.so`, a vendor's library).
    pub module: PathBuf,
    pub token: TokenSelector,
    /// The user PIN (printed as `[redacted]`).
    pub pin: SecretString,
    /// Sessions kept open for reuse; more are opened under load and closed after.
    pub max_idle_sessions: usize,
    /// The string handed to `C_Initialize` in `pReserved`, for modules configured that way
    /// (NSS's softoken: `configdir='sql:/path' dbTokenDescription='…'`); `None` for most.
    pub init_parameters: Option<String>,
}

/// The label of a version's token object, in the namespace of an account.
pub fn object_label(account_id: &str, material: MaterialRef) -> String {
    format!(
        "{}{}:{}",
        label_prefix(account_id),
        material.key_id.hyphenated(),
        material.version
    )
}

fn label_prefix(account_id: &str) -> String {
    format!("keyhaven:{account_id}:")
}

/// The version a label of this account names.
pub fn parse_label(account_id: &str, label: &str) -> Option<MaterialRef> {
    let rest = label.strip_prefix(&label_prefix(account_id))?;
    let (key, version) = rest.split_once(':')?;
    Some(MaterialRef {
        key_id: uuid::Uuid::parse_str(key).ok()?,
        version: version.parse().ok()?,
    })
}

fn object_id(material: MaterialRef) -> Vec<u8> {
    let mut id = material.key_id.as_bytes().to_vec();
    id.extend_from_slice(&material.version.to_be_bytes());
    id
}

/// A keystore on one PKCS#11 token.
pub struct Pkcs11KeyStore {
    name: String,
    account_id: String,
    device: Device,
    /// Token objects, by version.
    handles: RwLock<HashMap<MaterialRef, ObjectHandle>>,
    /// What encrypt and decrypt use, by version: a session copy (or, where the device refused
    /// one, the token object), with the connection generation it is good for.
    working: RwLock<HashMap<MaterialRef, (u64, ObjectHandle)>>,
}

fn unavailable((failure, message): (Failure, String)) -> KeyStoreError {
    match failure {
        Failure::Authentication => KeyStoreError::DecryptFailed,
        Failure::Session | Failure::Device => KeyStoreError::Unavailable(message),
        Failure::Handle | Failure::Other => KeyStoreError::Internal(message),
    }
}

/// SoftHSM2 answers a GCM tag mismatch in `C_Decrypt` with `CKR_GENERAL_ERROR` (other devices
/// say `CKR_ENCRYPTED_DATA_INVALID`). After a successful `C_DecryptInit`, a general failure of
/// `C_Decrypt` is taken as a ciphertext that did not authenticate, not as a broken device:
/// otherwise every forged ciphertext would make the daemon reconnect.
fn tag_failure_as_invalid_data(error: CryptokiError) -> CryptokiError {
    match error {
        CryptokiError::Pkcs11(
            RvError::GeneralError | RvError::FunctionFailed,
            Function::Decrypt,
        ) => CryptokiError::Pkcs11(RvError::EncryptedDataInvalid, Function::Decrypt),
        other => other,
    }
}

/// AES-GCM with PKCS#11 3.0's message-based encryption, the nonce given (not generated by the
/// device): ciphertext ‖ tag, as `C_Encrypt` with `CKM_AES_GCM` answers. The operation is
/// always finished, so that the pooled session is left without one.
fn encrypt_message(
    session: &Session,
    handle: ObjectHandle,
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptokiError> {
    let mut iv = *nonce;
    let mut tag = [0u8; 16];
    // No bits are held fixed: the device generates none of the nonce (NSS's softoken refuses
    // a nonce with every bit fixed even when it is not to generate any).
    let params = GcmMessageParams::new(&mut iv, 0.into(), GeneratorFunction::NoGenerate, &mut tag)?;
    session.message_encrypt_init(&Mechanism::AesGcmMessage(params), handle)?;
    let sealed = session.encrypt_message(&MessageParam::AesGcmMessage(params), aad, plaintext);
    let finished = session.message_encrypt_final();
    let mut sealed = sealed?;
    finished?;
    sealed.extend_from_slice(&tag);
    Ok(sealed)
}

/// AES-256-GCM of one plaintext on `session` with `handle`: ciphertext ‖ tag.
fn seal(
    session: &Session,
    handle: ObjectHandle,
    messages: bool,
    nonce: &[u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptokiError> {
    if messages {
        return encrypt_message(session, handle, nonce, aad, plaintext);
    }
    let mut iv = *nonce;
    let params = GcmParams::new(&mut iv, aad, 128.into())?;
    session.encrypt(&Mechanism::AesGcm(params), handle, plaintext)
}

/// The PKCS#11 mechanism of an HMAC.
fn hmac_mechanism(algorithm: MacAlgorithm) -> Mechanism<'static> {
    match algorithm {
        MacAlgorithm::HmacSha224 => Mechanism::Sha224Hmac,
        MacAlgorithm::HmacSha256 => Mechanism::Sha256Hmac,
        MacAlgorithm::HmacSha384 => Mechanism::Sha384Hmac,
        MacAlgorithm::HmacSha512 => Mechanism::Sha512Hmac,
    }
}

fn logged_in(session: &Session) -> Result<bool, CryptokiError> {
    Ok(matches!(
        session.get_session_info()?.session_state(),
        SessionState::RwUser | SessionState::RoUser
    ))
}

/// The token object a version's operations use: its secret key, or the private key of its
/// key pair.
fn find(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, CryptokiError> {
    for class in [ObjectClass::SECRET_KEY, ObjectClass::PRIVATE_KEY] {
        let found = session.find_objects(&[
            Attribute::Class(class),
            Attribute::Token(true),
            Attribute::Label(label.as_bytes().to_vec()),
        ])?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Ok(Vec::new())
}

/// Destroys every object with this label, whatever its class: the secret key, or both halves
/// of a key pair, and any session copy.
fn destroy_labelled(session: &Session, label: &[u8]) -> Result<(), CryptokiError> {
    let found = session.find_objects(&[Attribute::Label(label.to_vec())])?;
    if found.is_empty() && !logged_in(session)? {
        return Err(CryptokiError::Pkcs11(
            RvError::UserNotLoggedIn,
            Function::FindObjects,
        ));
    }
    for handle in found {
        session.destroy_object(handle)?;
    }
    Ok(())
}

impl Pkcs11KeyStore {
    /// Connects to the token (module, slot, login, mechanism check); objects are named in the
    /// namespace of `account_id`.
    pub fn connect(settings: Pkcs11Settings, account_id: &str) -> Result<Self, KeyStoreError> {
        let name = format!("{PREFIX}{}", settings.name);
        let device = Device::connect(settings)?;
        Ok(Self {
            name,
            account_id: account_id.to_owned(),
            device,
            handles: RwLock::new(HashMap::new()),
            working: RwLock::new(HashMap::new()),
        })
    }

    /// Taken to read the token's objects: on a token that needs it (see the module's
    /// documentation), no object is created or destroyed meanwhile.
    fn reading_objects(&self) -> Option<RwLockReadGuard<'_, ()>> {
        let lock = self.device.object_lock()?;
        Some(lock.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Taken to create or destroy token objects: alone on a token that needs it.
    fn changing_objects(&self) -> Option<RwLockWriteGuard<'_, ()>> {
        let lock = self.device.object_lock()?;
        Some(
            lock.write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn cached(&self, material: MaterialRef) -> Option<ObjectHandle> {
        self.handles.read().ok()?.get(&material).copied()
    }

    fn remember(&self, material: MaterialRef, handle: ObjectHandle) {
        if let Ok(mut handles) = self.handles.write() {
            handles.insert(material, handle);
        }
    }

    fn forget(&self, material: MaterialRef) {
        if let Ok(mut handles) = self.handles.write() {
            handles.remove(&material);
        }
        if let Ok(mut working) = self.working.write() {
            working.remove(&material);
        }
    }

    /// The handle encrypt and decrypt use: the version's session copy, made on first use.
    fn working_handle(&self, material: MaterialRef) -> Result<ObjectHandle, KeyStoreError> {
        let generation = self.device.generation();
        if let Some((made, handle)) = self
            .working
            .read()
            .ok()
            .and_then(|w| w.get(&material).copied())
            && made == generation
        {
            return Ok(handle);
        }
        let token = self.handle(material)?;
        let copied = {
            let _reading = self.reading_objects();
            self.device
                .copy_in_session(token, &[Attribute::Token(false)])
        };
        let (made, handle) = match copied {
            Ok((copy, made)) => (made, copy),
            // Busy with another copy, or reconnected meanwhile: use the token object this
            // time and copy on a later call.
            Err((Failure::Session, _)) => return Ok(token),
            Err((_, message)) => {
                tracing::debug!(?material, %message, "no session copy; using the token object");
                (generation, token)
            }
        };
        let Ok(mut working) = self.working.write() else {
            return Ok(handle);
        };
        match working.get(&material) {
            // Someone else made one for this connection meanwhile: keep theirs, drop ours.
            Some((other_made, other)) if *other_made == made && *other != handle => {
                let other = *other;
                drop(working);
                if handle != token {
                    let _ = self.device.with_session(|s| s.destroy_object(handle));
                }
                Ok(other)
            }
            _ => {
                working.insert(material, (made, handle));
                Ok(handle)
            }
        }
    }

    /// The object handle of a version, from the cache or the token.
    fn handle(&self, material: MaterialRef) -> Result<ObjectHandle, KeyStoreError> {
        if let Some(handle) = self.cached(material) {
            return Ok(handle);
        }
        let _reading = self.reading_objects();
        let found = self
            .device
            .with_session(|session| {
                let found = find(session, &object_label(&self.account_id, material))?;
                // Private objects are invisible without a login: nothing found may mean that.
                if found.is_empty() && !logged_in(session)? {
                    return Err(CryptokiError::Pkcs11(
                        RvError::UserNotLoggedIn,
                        Function::FindObjects,
                    ));
                }
                Ok(found)
            })
            .map_err(unavailable)?;
        let handle = *found
            .first()
            .ok_or(KeyStoreError::MaterialNotFound(material))?;
        self.remember(material, handle);
        Ok(handle)
    }

    /// Generates the version's token object with `mechanism` and `template`. A failed attempt
    /// may have made the object before its answer was lost: a retry first destroys what the
    /// label finds, so that one version is never two objects.
    fn generate_object(
        &self,
        material: MaterialRef,
        mechanism: &Mechanism,
        template: &[Attribute],
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        self.generate_with(material, |session| {
            session.generate_key(mechanism, template)
        })
    }

    /// Generates a version's object(s) with `make`, which answers the handle operations use.
    /// A failed attempt may have made them before its answer was lost: a retry first destroys
    /// what the label finds, so that one version is never two objects (or two pairs).
    fn generate_with(
        &self,
        material: MaterialRef,
        mut make: impl FnMut(&Session) -> Result<ObjectHandle, CryptokiError>,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        let mut attempts = 0;
        let changing = self.changing_objects();
        let generated = self.device.with_session(|session| {
            attempts += 1;
            if attempts > 1 {
                destroy_labelled(session, object_label(&self.account_id, material).as_bytes())?;
            }
            make(session)
        });
        drop(changing);
        match generated {
            Ok(handle) => {
                self.remember(material, handle);
                Ok(GeneratedMaterial::default())
            }
            Err(failure) => {
                // Nobody will record this version: leave nothing of it behind.
                if let Err(error) = self.destroy(material) {
                    tracing::warn!(?material, %error, "could not clear a failed generation");
                }
                Err(unavailable(failure))
            }
        }
    }

    fn cannot_make(&self, spec: KeySpec) -> KeyStoreError {
        KeyStoreError::Unsupported(format!(
            "keystore {} does not make {} keys",
            self.name,
            spec.as_str()
        ))
    }

    /// Refuses a mechanism the token did not offer, naming it and what needs it.
    fn require_mechanism(
        &self,
        mechanism: MechanismType,
        for_what: &str,
    ) -> Result<(), KeyStoreError> {
        if self.device.offers(mechanism) {
            Ok(())
        } else {
            Err(KeyStoreError::Unsupported(format!(
                "the token of keystore {} does not offer {mechanism}, which {for_what} needs",
                self.name
            )))
        }
    }

    /// Runs a keyed operation; a stale handle is looked up once more.
    fn with_key<T>(
        &self,
        material: MaterialRef,
        operation: impl Fn(&Session, ObjectHandle) -> Result<T, CryptokiError>,
    ) -> Result<T, KeyStoreError> {
        let handle = self.working_handle(material)?;
        match self.run_on(material, handle, &operation) {
            Err((Failure::Handle, _)) => {
                self.forget(material);
                let handle = self.working_handle(material)?;
                self.run_on(material, handle, &operation)
                    .map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
    }

    /// Runs a keyed operation on `handle`; one on the token object itself (no session copy)
    /// reads the token's objects.
    fn run_on<T>(
        &self,
        material: MaterialRef,
        handle: ObjectHandle,
        operation: &impl Fn(&Session, ObjectHandle) -> Result<T, CryptokiError>,
    ) -> Result<T, (Failure, String)> {
        let _reading = if self.cached(material) == Some(handle) {
            self.reading_objects()
        } else {
            None
        };
        self.device.with_session(|s| operation(s, handle))
    }
}

impl KeyStore for Pkcs11KeyStore {
    fn name(&self) -> &str {
        &self.name
    }

    fn origin(&self) -> &'static str {
        "AWS_CLOUDHSM"
    }

    fn blocks(&self) -> bool {
        true
    }

    fn material_outside_store(&self) -> bool {
        true
    }

    fn generate(&self, material: MaterialRef) -> Result<GeneratedMaterial, KeyStoreError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(object_label(&self.account_id, material).into_bytes()),
            Attribute::Id(object_id(material)),
        ];
        self.generate_object(material, &Mechanism::AesKeyGen, &template)
    }

    /// ECDH in the device: a named curve this keystore knows, and a token offering
    /// `CKM_EC_KEY_PAIR_GEN` and `CKM_ECDH1_DERIVE` (a missing one is named).
    fn supports_key_agreement(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        if !spec.agrees_keys() || asymmetric::ec_params(spec).is_none() {
            return Err(KeyStoreError::Unsupported(format!(
                "keystore {} does not make {} keys for KEY_AGREEMENT",
                self.name,
                spec.as_str()
            )));
        }
        let for_what = format!("{} KEY_AGREEMENT keys", spec.as_str());
        asymmetric::agreement_mechanisms()
            .into_iter()
            .try_for_each(|mechanism| self.require_mechanism(mechanism, &for_what))
    }

    /// Key-agreement pairs are made with a private key that derives and does not sign.
    fn generate_for(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        purpose: MaterialUse,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        match purpose {
            MaterialUse::KeyAgreement => {
                self.supports_key_agreement(spec)?;
                self.generate_pair(material, spec, true)
            }
            MaterialUse::Default => self.generate_spec(material, spec),
        }
    }

    /// `CKM_ECDH1_DERIVE` in the device (no KDF: the raw x-coordinate AWS KMS answers) into a
    /// generic secret session object whose value is read out and which is destroyed at once.
    /// That object alone is extractable and not sensitive: the shared secret is the
    /// operation's answer; the private key stays as it was made.
    fn derive_shared_secret(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        peer: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        self.supports_key_agreement(spec)?;
        let point = asymmetric::peer_point(spec, peer)?;
        let secret_len = asymmetric::shared_secret_len(spec);
        let derive = |handle: ObjectHandle| {
            // The derived object is created and destroyed in the device: under the token's
            // object lock, as every object change is.
            let _changing = self.changing_objects();
            self.device
                .with_session(|session| pairs::derive_secret(session, handle, &point, secret_len))
        };
        // The handle is looked up before the lock is taken (finding reads the objects).
        let handle = self.working_handle(material)?;
        match derive(handle) {
            Err((Failure::Handle, _)) => {
                self.forget(material);
                let handle = self.working_handle(material)?;
                derive(handle).map_err(unavailable)
            }
            other => other.map_err(unavailable),
        }
    }

    /// RSAES-OAEP in the device ([`Pkcs11KeyStore::decrypt_oaep`]).
    fn decrypt_asymmetric(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        let hash = match algorithm {
            EncryptionAlgorithm::RsaesOaepSha1 => asymmetric::OaepHash::Sha1,
            EncryptionAlgorithm::RsaesOaepSha256 => asymmetric::OaepHash::Sha256,
            other => {
                return Err(KeyStoreError::Unsupported(format!(
                    "keystore {} cannot decrypt {} with {} keys",
                    self.name,
                    other.as_str(),
                    spec.as_str()
                )));
            }
        };
        self.decrypt_oaep(material, spec, hash, ciphertext)
    }

    fn supports(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        match spec {
            // Checked at connect.
            KeySpec::SymmetricDefault => Ok(()),
            KeySpec::Hmac224 | KeySpec::Hmac256 | KeySpec::Hmac384 | KeySpec::Hmac512 => {
                self.require_mechanism(MechanismType::GENERIC_SECRET_KEY_GEN, spec.as_str())?;
                match spec.mac_algorithm() {
                    Some(algorithm) => self.require_mechanism(
                        hmac_mechanism(algorithm).mechanism_type(),
                        spec.as_str(),
                    ),
                    None => Ok(()),
                }
            }
            other if asymmetric::is_key_pair(other) => asymmetric::mechanisms(other)
                .into_iter()
                .try_for_each(|mechanism| self.require_mechanism(mechanism, other.as_str())),
            other => Err(self.cannot_make(other)),
        }
    }

    fn generate_spec(
        &self,
        material: MaterialRef,
        spec: KeySpec,
    ) -> Result<GeneratedMaterial, KeyStoreError> {
        if spec == KeySpec::SymmetricDefault {
            return self.generate(material);
        }
        self.supports(spec)?;
        if asymmetric::is_key_pair(spec) {
            return self.generate_pair(material, spec, false);
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen((spec.material_len() as u64).into()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Label(object_label(&self.account_id, material).into_bytes()),
            Attribute::Id(object_id(material)),
        ];
        self.generate_object(material, &Mechanism::GenericSecretKeyGen, &template)
    }

    fn mac(
        &self,
        material: MaterialRef,
        algorithm: MacAlgorithm,
        message: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let mechanism = hmac_mechanism(algorithm);
        self.require_mechanism(mechanism.mechanism_type(), algorithm.as_str())?;
        self.with_key(material, |session, handle| {
            session.sign(&mechanism, handle, message)
        })
    }

    /// `C_Verify` in the device: the MAC is compared there, in constant time (see below for
    /// tokens that answer a bad MAC as a failure).
    fn verify_mac(
        &self,
        material: MaterialRef,
        algorithm: MacAlgorithm,
        message: &[u8],
        mac: &[u8],
    ) -> Result<bool, KeyStoreError> {
        let mechanism = hmac_mechanism(algorithm);
        self.require_mechanism(mechanism.mechanism_type(), algorithm.as_str())?;
        // A MAC of any other length does not verify, whatever the device says: NSS's softoken
        // compares only the bytes given, so its C_Verify accepts the MAC's first byte alone.
        if mac.len() != algorithm.mac_len() {
            return Ok(false);
        }
        self.with_key(material, |session, handle| {
            match session.verify(&mechanism, handle, message, mac) {
                Ok(()) => Ok(true),
                Err(CryptokiError::Pkcs11(
                    RvError::SignatureInvalid | RvError::SignatureLenRange,
                    _,
                )) => Ok(false),
                // Some tokens answer a MAC that does not verify with a generic failure (NSS's
                // softoken: CKR_DEVICE_ERROR), which would otherwise be retried as a broken
                // device. The device computing the MAC tells the two apart: if it can, the
                // MAC given is compared with it here, in constant time; if not, the device
                // really failed.
                Err(CryptokiError::Pkcs11(
                    RvError::DeviceError | RvError::GeneralError | RvError::FunctionFailed,
                    Function::Verify,
                )) => {
                    let expected = session.sign(&mechanism, handle, message)?;
                    Ok(subtle::ConstantTimeEq::ct_eq(expected.as_slice(), mac).into())
                }
                Err(other) => Err(other),
            }
        })
    }

    /// `SYMMETRIC_DEFAULT` material, where the token offers what the import needs.
    fn supports_import(&self, spec: KeySpec) -> Result<(), KeyStoreError> {
        if spec != KeySpec::SymmetricDefault {
            return Err(KeyStoreError::Unsupported(format!(
                "keystore {} imports SYMMETRIC_DEFAULT material only, not {}",
                self.name,
                spec.as_str()
            )));
        }
        for mechanism in [
            MechanismType::RSA_PKCS_KEY_PAIR_GEN,
            MechanismType::AES_KEY_WRAP_PAD,
        ] {
            self.require_mechanism(mechanism, "importing key material")?;
        }
        Ok(())
    }

    /// The pair is generated in the device; only the public half's modulus and exponent leave
    /// it, and the public object is destroyed once read.
    fn make_wrapping_key(
        &self,
        wrapping: uuid::Uuid,
        bits: usize,
    ) -> Result<WrappingKey, KeyStoreError> {
        self.make_wrapping_key_in_device(wrapping, bits)
    }

    /// `C_UnwrapKey` into the device (see the module's documentation); the commitment is
    /// computed there too.
    fn import_material(
        &self,
        material: MaterialRef,
        wrapping: uuid::Uuid,
        algorithm: WrappingAlgorithm,
        spec: KeySpec,
        encrypted: &[u8],
    ) -> Result<ImportedMaterial, KeyStoreError> {
        self.import_in_device(material, wrapping, algorithm, spec, encrypted)
    }

    fn destroy_wrapping_key(&self, wrapping: uuid::Uuid) -> Result<WriteBatch, KeyStoreError> {
        self.destroy_wrapping_key_in_device(wrapping)
    }

    /// Signs the digest in the device with the version's private key (`CKM_ECDSA`,
    /// `CKM_RSA_PKCS_PSS`, `CKM_RSA_PKCS` over the DigestInfo); ECDSA's `r ‖ s` comes back as
    /// DER.
    fn sign(
        &self,
        material: MaterialRef,
        spec: KeySpec,
        algorithm: SigningAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        if !asymmetric::is_key_pair(spec) {
            return Err(self.cannot_make(spec));
        }
        let (mechanism, mechanism_type, input) = asymmetric::signing_input(algorithm, digest);
        self.require_mechanism(mechanism_type, algorithm.as_str())?;
        let signature = self.with_key(material, |session, handle| {
            session.sign(&mechanism, handle, &input)
        })?;
        if mechanism_type == MechanismType::ECDSA {
            asymmetric::ecdsa_der(&signature)
        } else {
            Ok(signature)
        }
    }

    fn public_key(&self, material: MaterialRef, spec: KeySpec) -> Result<Vec<u8>, KeyStoreError> {
        if !asymmetric::is_key_pair(spec) {
            return Err(self.cannot_make(spec));
        }
        self.read_public_key(material, spec)
    }

    fn discard(&self, material: MaterialRef) {
        if let Err(error) = self.destroy(material) {
            tracing::error!(?material, %error, "could not undo a key generated in the device");
        }
    }

    fn encrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KeyStoreError> {
        let messages = self.device.encrypts_messages();
        self.with_key(material, |session, handle| {
            seal(session, handle, messages, nonce, aad, plaintext)
        })
    }

    /// Every item on one session, in one pass: the versions' handles are found (or copied into
    /// sessions) once each, then the items are sealed one after another without giving the
    /// session back. An item the pass could not do (a handle gone stale, a version not found)
    /// is done again on its own through [`KeyStore::encrypt`], which looks the handle up afresh
    /// and answers the item's own error. A session lost mid-pass is retried as a whole by
    /// `with_session`: an item sealed twice with its own nonce, key, AAD and plaintext gives the
    /// same ciphertext, and only one is answered. A device still failing after the retries
    /// answers every item unavailable.
    fn encrypt_many(
        &self,
        items: Vec<SealItem>,
    ) -> Result<Vec<Result<Vec<u8>, KeyStoreError>>, KeyStoreError> {
        let mut handles: HashMap<MaterialRef, Option<ObjectHandle>> = HashMap::new();
        for item in &items {
            handles
                .entry(item.material)
                .or_insert_with(|| self.working_handle(item.material).ok());
        }
        // Sealing with a token object itself (no session copy) reads the token's objects.
        let on_token = handles
            .iter()
            .any(|(material, handle)| handle.is_some() && *handle == self.cached(*material));
        let messages = self.device.encrypts_messages();
        let pass = {
            let _reading = if on_token {
                self.reading_objects()
            } else {
                None
            };
            self.device.with_session(|session| {
                let mut sealed = Vec::with_capacity(items.len());
                for item in &items {
                    let Some(handle) = handles.get(&item.material).copied().flatten() else {
                        sealed.push(None);
                        continue;
                    };
                    let plaintext = item.plaintext.expose();
                    match seal(session, handle, messages, &item.nonce, &item.aad, plaintext) {
                        Ok(one) => sealed.push(Some(one)),
                        Err(error) => match classify(&error) {
                            Failure::Session | Failure::Device => return Err(error),
                            _ => sealed.push(None),
                        },
                    }
                }
                Ok(sealed)
            })
        };
        let sealed = match pass {
            Ok(sealed) => sealed,
            Err(failure) => {
                return Ok(items
                    .iter()
                    .map(|_| Err(unavailable(failure.clone())))
                    .collect());
            }
        };
        Ok(items
            .iter()
            .zip(sealed)
            .map(|(item, sealed)| match sealed {
                Some(one) => Ok(one),
                None => self.encrypt(
                    item.material,
                    &item.nonce,
                    &item.aad,
                    item.plaintext.expose(),
                ),
            })
            .collect())
    }

    fn decrypt(
        &self,
        material: MaterialRef,
        nonce: &[u8; 12],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<SecretBytes, KeyStoreError> {
        if sealed.len() < 16 {
            return Err(KeyStoreError::DecryptFailed);
        }
        self.with_key(material, |session, handle| {
            let mut iv = *nonce;
            let params = GcmParams::new(&mut iv, aad, 128.into())?;
            session
                .decrypt(&Mechanism::AesGcm(params), handle, sealed)
                .map(SecretBytes::new)
                .map_err(tag_failure_as_invalid_data)
        })
    }

    fn destroy(&self, material: MaterialRef) -> Result<WriteBatch, KeyStoreError> {
        self.forget(material);
        let _changing = self.changing_objects();
        self.device
            .with_session(|session| {
                destroy_labelled(session, object_label(&self.account_id, material).as_bytes())
            })
            .map_err(unavailable)?;
        Ok(WriteBatch::new())
    }

    fn check(&self, material: MaterialRef) -> Result<(), KeyStoreError> {
        self.forget(material);
        self.handle(material).map(|_| ())
    }

    fn list(&self) -> Result<Vec<MaterialRef>, KeyStoreError> {
        let prefix = label_prefix(&self.account_id);
        let _reading = self.reading_objects();
        self.device
            .with_session(|session| {
                if !logged_in(session)? {
                    return Err(CryptokiError::Pkcs11(
                        RvError::UserNotLoggedIn,
                        Function::FindObjects,
                    ));
                }
                // Every class: a version is a secret key or a key pair (whose halves share
                // the label), and a pair cut short may have left either half alone.
                let handles = session.find_objects(&[Attribute::Token(true)])?;
                let mut found = BTreeSet::new();
                for handle in handles {
                    for attribute in session.get_attributes(handle, &[AttributeType::Label])? {
                        if let Attribute::Label(label) = attribute {
                            let label = String::from_utf8_lossy(&label);
                            if label.starts_with(&prefix)
                                && let Some(material) = parse_label(&self.account_id, &label)
                            {
                                found.insert(material);
                            }
                        }
                    }
                }
                Ok(found.into_iter().collect())
            })
            .map_err(unavailable)
    }
}
