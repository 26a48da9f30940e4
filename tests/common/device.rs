//! A second, independent PKCS#11 session on the test token, to look at what the daemon did.

use super::pkcs11_settings;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keyhaven::keystore::pkcs11::TokenSelector;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A session of our own on the test token, logged in as the user.
pub fn independent_session() -> Session {
    let settings = pkcs11_settings();
    let TokenSelector::Label(label) = &settings.token else {
        panic!("the test token is chosen by label");
    };
    logged_in_session(&settings.module, label, settings.pin.expose(), true)
}

/// A session of this process on the token labelled `label`, logged in as the user (the
/// module initialised and the user logged in already, by a daemon in this process, is fine).
fn logged_in_session(module: &Path, label: &str, pin: &str, read_write: bool) -> Session {
    let module = Pkcs11::new(module).expect("load the PKCS#11 module");
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let slot = module
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            module
                .get_token_info(*slot)
                .map(|info| info.label().trim_end() == label)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("token {label} not found"));
    let session = if read_write {
        module.open_rw_session(slot)
    } else {
        module.open_ro_session(slot)
    }
    .expect("open a session");
    let pin = AuthPin::new(pin.to_owned().into_boxed_str());
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("C_Login: {e}"),
    }
    session
}

/// The token objects of one key version of an account.
pub fn objects(session: &Session, account: &str, key: &str, version: u32) -> Vec<ObjectHandle> {
    labelled(session, account, key, version, true)
}

/// The session copies of one key version that a daemon in this process made to work with.
pub fn session_copies(
    session: &Session,
    account: &str,
    key: &str,
    version: u32,
) -> Vec<ObjectHandle> {
    labelled(session, account, key, version, false)
}

fn labelled(
    session: &Session,
    account: &str,
    key: &str,
    version: u32,
    token: bool,
) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Token(token),
            Attribute::Label(format!("keyhaven:{account}:{key}:{version}").into_bytes()),
        ])
        .expect("C_FindObjects")
}

/// A SoftHSM2 token made for one test run (for tests that need a token no other test
/// touches), deleted afterwards.
pub struct PrivateToken {
    pub module: PathBuf,
    pub label: String,
    pub pin: String,
}

impl PrivateToken {
    /// A fresh token labelled `<prefix>-<random>`, in the SoftHSM2 `hsm-sim/setup.sh` set up.
    pub fn create(prefix: &str) -> PrivateToken {
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!(
                    "{name} is not set: this test needs SoftHSM2. \
                     Run `eval \"$(hsm-sim/setup.sh)\"` first (`make test` does this)."
                )
            })
        };
        let _ = var("SOFTHSM2_CONF");
        let module = PathBuf::from(var("KEYHAVEN_PKCS11_MODULE"));
        // Token labels are at most 32 characters.
        let label = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let pin = "12345678";
        let output = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", &label])
            .args(["--so-pin", "87654321", "--pin", pin])
            .output()
            .expect("run softhsm2-util (installed by hsm-sim/setup.sh)");
        assert!(
            output.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PrivateToken {
            module,
            label,
            pin: pin.into(),
        }
    }

    /// A logged-in session of this process on the token.
    pub fn session(&self) -> Session {
        logged_in_session(&self.module, &self.label, &self.pin, false)
    }
}

impl Drop for PrivateToken {
    fn drop(&mut self) {
        let _ = Command::new("softhsm2-util")
            .args(["--delete-token", "--token", &self.label])
            .output();
    }
}
