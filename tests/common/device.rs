//! A second, independent PKCS#11 session on the test token, to look at what the daemon did.

use super::pkcs11_settings;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use keyhaven::keystore::pkcs11::TokenSelector;

/// A session of our own on the test token, logged in as the user.
pub fn independent_session() -> Session {
    let settings = pkcs11_settings();
    let module = Pkcs11::new(&settings.module).expect("load the PKCS#11 module");
    match module.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    let TokenSelector::Label(label) = &settings.token else {
        panic!("the test token is chosen by label");
    };
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
        .expect("the test token");
    let session = module.open_rw_session(slot).expect("open session");
    let pin = AuthPin::new(settings.pin.expose().clone().into_boxed_str());
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
