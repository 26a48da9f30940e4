//! One PKCS#11 token: the loaded module, the slot found by label or serial, a pool of logged-in
//! sessions shared by worker threads, and recovery when the device fails.
//!
//! A module is loaded and `C_Initialize`d once per process (the standard allows no more) and
//! shared by every keystore that names it. The token is chosen by label or serial, never by
//! slot index: slot numbers move. Login is per application and token, so one session is kept
//! open for the pool's lifetime to hold it; other sessions come and go.

use super::Pkcs11Settings;
use crate::keystore::KeyStoreError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

/// Attempts per operation before the device is reported unavailable.
const ATTEMPTS: u32 = 3;
const BACKOFF: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(200)];

/// Which token to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSelector {
    Label(String),
    Serial(String),
}

/// A loaded module and the parameters it was initialised with. The parameters stay here, for
/// the life of the process, because a module may keep the pointer it was given.
type LoadedModule = (Pkcs11, Option<CString>);

fn modules() -> MutexGuard<'static, HashMap<PathBuf, LoadedModule>> {
    static MODULES: OnceLock<Mutex<HashMap<PathBuf, LoadedModule>>> = OnceLock::new();
    let lock = MODULES.get_or_init(|| Mutex::new(HashMap::new()));
    match lock.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Loads and initialises the module at `path`, once per process, passing `parameters` (if
/// any) to `C_Initialize`. A module is initialised once per process, so a second keystore
/// naming it with other parameters is refused rather than silently given the first's.
fn load_module(
    path: &Path,
    parameters: Option<&str>,
    reload: bool,
) -> Result<Pkcs11, KeyStoreError> {
    let mut modules = modules();
    if let Some((module, loaded_with)) = modules.get(path) {
        if loaded_with.as_ref().and_then(|p| p.to_str().ok()) != parameters {
            return Err(KeyStoreError::Unavailable(format!(
                "PKCS#11 module {} is already initialised in this process with other \
                 initialisation parameters",
                path.display()
            )));
        }
        if !reload {
            return Ok(module.clone());
        }
    }
    let module = Pkcs11::new(path).map_err(|e| {
        KeyStoreError::Unavailable(format!(
            "cannot load PKCS#11 module {}: {e}",
            path.display()
        ))
    })?;
    let parameters = parameters.map(CString::new).transpose().map_err(|_| {
        KeyStoreError::Unavailable(format!(
            "the initialisation parameters of PKCS#11 module {} contain a NUL byte",
            path.display()
        ))
    })?;
    match module.initialize(initialize_args(parameters.as_ref())) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => {
            return Err(KeyStoreError::Unavailable(format!(
                "cannot initialise PKCS#11 module {}: {e}",
                path.display()
            )));
        }
    }
    modules.insert(path.to_path_buf(), (module.clone(), parameters));
    Ok(module)
}

/// `C_Initialize`'s arguments: OS locking, and `parameters` in `pReserved`. The standard
/// reserves that pointer, but modules such as NSS's softoken read their configuration from it
/// (a NUL-terminated string: `configdir='sql:/path' …`) and refuse to start without it.
#[allow(unsafe_code)]
fn initialize_args(parameters: Option<&CString>) -> CInitializeArgs {
    let flags = CInitializeFlags::OS_LOCKING_OK;
    match parameters.and_then(|p| NonNull::new(p.as_ptr().cast_mut().cast::<c_void>())) {
        // SAFETY: the pointer is to a NUL-terminated string kept alive in `modules()` for the
        // rest of the process (the caller stores it with the module), which is what a module
        // reading `pReserved` as its parameter string expects; it is never written through.
        Some(pointer) => unsafe { CInitializeArgs::new_with_reserved(flags, pointer) },
        None => CInitializeArgs::new(flags),
    }
}

/// A PIN hashed with a key made for this process: what [`verified_pins`] keeps instead of
/// the PIN.
fn pin_tag(pin: &str) -> [u8; 32] {
    use sha2::Digest;
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
        key
    });
    let mut hash = sha2::Sha256::new();
    hash.update(key);
    hash.update(pin.as_bytes());
    hash.finalize().into()
}

/// Which token: manufacturer, model and serial (the same token may be reached through two
/// modules, such as a forwarding one).
type TokenIdentity = (String, String, String);

/// PINs a token itself accepted (`C_Login` answered `CKR_OK`) in this process. Login state is
/// per process and token: a keystore whose PIN is the one accepted need not log everyone out
/// to have it checked again.
fn verified_pins() -> MutexGuard<'static, HashMap<TokenIdentity, [u8; 32]>> {
    static PINS: OnceLock<Mutex<HashMap<TokenIdentity, [u8; 32]>>> = OnceLock::new();
    let lock = PINS.get_or_init(|| Mutex::new(HashMap::new()));
    lock.lock().unwrap_or_else(|p| p.into_inner())
}

/// The lock that makes object changes on a software token take turns with every other use
/// of its object list, shared by all the keystores of this process on that token; `None` for
/// other devices. SoftHSM2 keeps one object index per token and process, which a search can
/// corrupt while another thread creates or destroys an object (see `keystore/pkcs11`). NSS's
/// softoken (manufacturer "Mozilla Foundation") keeps its objects in SQLite and deadlocks
/// when one thread generates a key pair while another destroys an object: each waits for a
/// lock the other holds, the one in SQLite's busy loop for ever.
fn object_lock(module: &Pkcs11, slot: Slot) -> Option<Arc<RwLock<()>>> {
    static LOCKS: OnceLock<Mutex<HashMap<TokenIdentity, Arc<RwLock<()>>>>> = OnceLock::new();
    let identity = token_identity(module, slot)?;
    if !identity.0.starts_with("SoftHSM") && identity.0 != "Mozilla Foundation" {
        return None;
    }
    let mut locks = LOCKS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    Some(locks.entry(identity).or_default().clone())
}

fn token_identity(module: &Pkcs11, slot: Slot) -> Option<TokenIdentity> {
    let info = module.get_token_info(slot).ok()?;
    Some((
        info.manufacturer_id().trim_end().to_owned(),
        info.model().trim_end().to_owned(),
        info.serial_number().trim_end().to_owned(),
    ))
}

fn verified_here(module: &Pkcs11, slot: Slot, tag: &[u8; 32]) -> bool {
    token_identity(module, slot).is_some_and(|token| verified_pins().get(&token) == Some(tag))
}

fn remember_verified(module: &Pkcs11, slot: Slot, tag: [u8; 32]) {
    if let Some(token) = token_identity(module, slot) {
        verified_pins().insert(token, tag);
    }
}

/// How a failed call should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The session is gone: take another one and try again.
    Session,
    /// The device or module is in trouble: reconnect (with backoff), then try again.
    Device,
    /// The object handle is stale: look the object up again.
    Handle,
    /// The ciphertext did not authenticate.
    Authentication,
    /// Anything else: do not retry.
    Other,
}

/// Sorts a PKCS#11 error by what the caller can do about it.
pub fn classify(error: &CryptokiError) -> Failure {
    match error {
        CryptokiError::Pkcs11(rv, _) => match rv {
            RvError::SessionHandleInvalid | RvError::SessionClosed => Failure::Session,
            // The login is gone (all sessions were closed, or someone logged out): log in again.
            RvError::UserNotLoggedIn
            | RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::CryptokiNotInitialized
            | RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::SessionCount
            | RvError::HostMemory => Failure::Device,
            RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid => Failure::Handle,
            RvError::EncryptedDataInvalid
            | RvError::EncryptedDataLenRange
            | RvError::DataInvalid
            | RvError::DataLenRange => Failure::Authentication,
            _ => Failure::Other,
        },
        CryptokiError::LibraryLoading(_) => Failure::Device,
        _ => Failure::Other,
    }
}

struct Pool {
    module: Pkcs11,
    slot: Slot,
    /// Keeps the login alive while other sessions come and go, and owns the session copies
    /// of token keys (they live as long as it does).
    anchor: Option<Session>,
    idle: Vec<Session>,
    /// Which connection this is: handles of session objects are good for one connection only.
    generation: u64,
}

/// A token and its session pool.
pub struct Device {
    settings: Pkcs11Settings,
    pool: Mutex<Option<Pool>>,
    /// The generation of the newest pool; each new connection takes the next one.
    generation: AtomicU64,
    /// The mechanisms the token offered at connect.
    mechanisms: Vec<MechanismType>,
    /// See [`object_lock`].
    objects: Option<Arc<RwLock<()>>>,
    /// Whether the token does AES-GCM through PKCS#11 3.0's message-based encryption.
    message_gcm: bool,
}

impl Device {
    /// Connects to the token: loads the module, finds the slot, logs in, and checks that the
    /// mechanisms Keyhaven needs are there.
    pub fn connect(settings: Pkcs11Settings) -> Result<Self, KeyStoreError> {
        let mut device = Self {
            settings,
            pool: Mutex::new(None),
            generation: AtomicU64::new(0),
            mechanisms: Vec::new(),
            objects: None,
            message_gcm: false,
        };
        let pool = device.open_pool(false, true)?;
        let mechanisms = pool
            .module
            .get_mechanism_list(pool.slot)
            .map_err(|e| KeyStoreError::Unavailable(format!("cannot list mechanisms: {e}")))?;
        for needed in [MechanismType::AES_KEY_GEN, MechanismType::AES_GCM] {
            if !mechanisms.contains(&needed) {
                return Err(KeyStoreError::Unavailable(format!(
                    "the token does not offer {needed}, which Keyhaven needs"
                )));
            }
        }
        device.mechanisms = mechanisms;
        device.objects = object_lock(&pool.module, pool.slot);
        device.message_gcm = pool.module.is_fn_supported(Function::MessageEncryptInit)
            && pool.module.is_fn_supported(Function::EncryptMessage)
            && pool.module.is_fn_supported(Function::MessageEncryptFinal)
            && pool
                .module
                .get_mechanism_info(pool.slot, MechanismType::AES_GCM)
                .is_ok_and(|info| info.message_encrypt());
        *device.lock() = Some(pool);
        Ok(device)
    }

    /// The lock object changes on this token take turns under, if it needs one.
    pub fn object_lock(&self) -> Option<&RwLock<()>> {
        self.objects.as_deref()
    }

    /// Whether AES-GCM encryption should use PKCS#11 3.0's message-based functions: the token
    /// offers them for `CKM_AES_GCM` (`CKF_MESSAGE_ENCRYPT`). There the tag is an output of its
    /// own, so no guess of the output's length is involved; NSS's softoken answers
    /// `C_Encrypt`'s length query for GCM without the tag's 16 bytes, then refuses the buffer
    /// it asked for (`CKR_BUFFER_TOO_SMALL`).
    pub fn encrypts_messages(&self) -> bool {
        self.message_gcm
    }

    /// Whether the token offered `mechanism` at connect.
    pub fn offers(&self, mechanism: MechanismType) -> bool {
        self.mechanisms.contains(&mechanism)
    }

    fn lock(&self) -> MutexGuard<'_, Option<Pool>> {
        match self.pool.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn find_slot(&self, module: &Pkcs11) -> Result<Slot, KeyStoreError> {
        let slots = module
            .get_slots_with_token()
            .map_err(|e| KeyStoreError::Unavailable(format!("cannot list slots: {e}")))?;
        for slot in slots {
            let Ok(info) = module.get_token_info(slot) else {
                continue;
            };
            let matches = match &self.settings.token {
                TokenSelector::Label(label) => info.label().trim_end() == label,
                TokenSelector::Serial(serial) => info.serial_number().trim_end() == serial,
            };
            if matches {
                return Ok(slot);
            }
        }
        Err(KeyStoreError::Unavailable(format!(
            "no token {:?} in module {}",
            self.settings.token,
            self.settings.module.display()
        )))
    }

    /// Opens the anchor session and logs in. `verify_pin` (at connect) makes sure the token
    /// checked the PIN even if this process was logged in already; reconnects skip that, so
    /// that they never log out other sessions of the process.
    fn open_pool(&self, reload: bool, verify_pin: bool) -> Result<Pool, KeyStoreError> {
        let module = load_module(
            &self.settings.module,
            self.settings.init_parameters.as_deref(),
            reload,
        )?;
        let slot = self.find_slot(&module)?;
        let anchor = module
            .open_rw_session(slot)
            .map_err(|e| KeyStoreError::Unavailable(format!("cannot open a session: {e}")))?;
        let pin = AuthPin::new(self.settings.pin.expose().clone().into_boxed_str());
        let pin_tag = pin_tag(self.settings.pin.expose());
        let login = match anchor.login(UserType::User, Some(&pin)) {
            // Login state is per application and token: when another session of this process
            // logged in (another keystore on the token, a tool sharing the module), the token
            // never looks at our PIN. At connect, unless the token accepted this very PIN in
            // this process before, log out and in again so that it does. (A logout also drops
            // the process's private session objects and handles; keystores find them again.)
            Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _))
                if verify_pin && !verified_here(&module, slot, &pin_tag) =>
            {
                tracing::info!(
                    "the token is already logged in by this process; logging in again to check the PIN"
                );
                match anchor.logout() {
                    Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserNotLoggedIn, _)) => {}
                    Err(e) => {
                        return Err(KeyStoreError::Unavailable(format!(
                            "cannot log out to check the PIN: {e}"
                        )));
                    }
                }
                anchor.login(UserType::User, Some(&pin))
            }
            other => other,
        };
        match login {
            Ok(()) => remember_verified(&module, slot, pin_tag),
            Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CryptokiError::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(KeyStoreError::Internal(
                    "the token refused the PIN (CKR_PIN_INCORRECT)".into(),
                ));
            }
            Err(e) => {
                return Err(KeyStoreError::Unavailable(format!("cannot log in: {e}")));
            }
        }
        Ok(Pool {
            module,
            slot,
            anchor: Some(anchor),
            idle: Vec::new(),
            generation: self.generation.fetch_add(1, Ordering::SeqCst) + 1,
        })
    }

    /// The current connection's generation: a session object made under another one is gone.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Copies a token object into a session object owned by the pool's anchor session (the
    /// material stays in the device), with `template` applied to the copy. Returns the copy
    /// and the generation it belongs to; it disappears when the connection is replaced.
    pub fn copy_in_session(
        &self,
        object: ObjectHandle,
        template: &[Attribute],
    ) -> Result<(ObjectHandle, u64), (Failure, String)> {
        // The anchor is taken out of the pool for the copy, so that a slow device holds up
        // no one else; a second copy meanwhile finds no anchor and is simply not made.
        let (anchor, generation) = {
            let mut guard = self.lock();
            let Some(pool) = guard.as_mut() else {
                return Err((Failure::Device, "not connected".into()));
            };
            let Some(anchor) = pool.anchor.take() else {
                return Err((Failure::Session, "the anchor session is busy".into()));
            };
            (anchor, pool.generation)
        };
        let copied = anchor
            .copy_object(object, template)
            .map_err(|e| (classify(&e), e.to_string()));
        let mut guard = self.lock();
        match guard.as_mut() {
            Some(pool) if pool.generation == generation && pool.anchor.is_none() => {
                pool.anchor = Some(anchor);
                copied.map(|copy| (copy, generation))
            }
            // The connection was replaced meanwhile: this anchor (and the copy) goes with it.
            _ => {
                drop(guard);
                drop(anchor);
                Err((Failure::Session, "the connection was replaced".into()))
            }
        }
    }

    /// Takes an idle session or opens one. A new session is opened outside the pool's lock:
    /// a device slow to open one must not hold up callers that find an idle one.
    fn checkout(&self) -> Result<Session, KeyStoreError> {
        let (module, slot) = {
            let mut guard = self.lock();
            let pool = match guard.as_mut() {
                Some(pool) => pool,
                None => guard.insert(self.open_pool(false, false)?),
            };
            if let Some(session) = pool.idle.pop() {
                return Ok(session);
            }
            (pool.module.clone(), pool.slot)
        };
        module
            .open_rw_session(slot)
            .map_err(|e| KeyStoreError::Unavailable(format!("cannot open a session: {e}")))
    }

    fn checkin(&self, session: Session) {
        if let Some(pool) = self.lock().as_mut()
            && pool.idle.len() < self.settings.max_idle_sessions
        {
            pool.idle.push(session);
        }
    }

    /// Drops every session and the module's state, then connects again.
    fn reconnect(&self) -> Result<(), KeyStoreError> {
        let mut guard = self.lock();
        if let Some(mut old) = guard.take() {
            old.idle.clear();
            old.anchor.take();
        }
        // Reuse the loaded module; initialise it afresh only if that fails (it was reset).
        let pool = self
            .open_pool(false, false)
            .or_else(|_| self.open_pool(true, false))?;
        *guard = Some(pool);
        Ok(())
    }

    /// Runs `operation` on a pooled session, retrying on session and device failures with
    /// backoff. Failures classified `Handle` are returned for the caller to re-find objects.
    pub fn with_session<T>(
        &self,
        mut operation: impl FnMut(&Session) -> Result<T, CryptokiError>,
    ) -> Result<T, (Failure, String)> {
        let mut last = (Failure::Other, String::new());
        for attempt in 0..ATTEMPTS {
            let session = match self.checkout() {
                Ok(session) => session,
                Err(e) => {
                    last = (Failure::Device, e.to_string());
                    self.back_off(attempt);
                    let _ = self.reconnect();
                    continue;
                }
            };
            match operation(&session) {
                Ok(value) => {
                    self.checkin(session);
                    return Ok(value);
                }
                Err(error) => {
                    let failure = classify(&error);
                    last = (failure, error.to_string());
                    match failure {
                        Failure::Session => {
                            drop(session);
                            tracing::warn!(%error, attempt, "PKCS#11 session lost; retrying");
                            // A second loss in a row: start again from a fresh login.
                            if attempt > 0
                                && let Err(e) = self.reconnect()
                            {
                                last = (Failure::Device, e.to_string());
                            }
                        }
                        Failure::Device => {
                            drop(session);
                            tracing::warn!(%error, attempt, "PKCS#11 device error; reconnecting");
                            self.back_off(attempt);
                            if let Err(e) = self.reconnect() {
                                last = (Failure::Device, e.to_string());
                            }
                        }
                        _ => {
                            self.checkin(session);
                            return Err(last);
                        }
                    }
                }
            }
        }
        Err(last)
    }

    fn back_off(&self, attempt: u32) {
        if let Some(delay) = BACKOFF.get(attempt as usize) {
            std::thread::sleep(*delay);
        }
    }
}
